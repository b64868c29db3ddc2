package scenarios

import (
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/token"
)

// goccy/go-yaml (v1.19.2) loses its place after a tab inside a
// double-quoted string: for each tab with more text after it on the line
// it moves one character too far, so `description: "a<TAB>b"` swallows the
// line break after it and the next key fails to parse. The workaround
// swaps each such tab for a placeholder character before lexing, one
// character for one so that every position stays put, and puts the tabs
// back into the parsed values.

// maxTabRounds bounds the relexing: each round repairs every string the
// lexer found, and a repaired string can reveal others that the lexer,
// having lost its place, did not see as strings.
const maxTabRounds = 8

// lexWithoutQuotedTabs lexes src, first replacing the tabs that trip the
// lexer with a placeholder rune that src does not contain (0 when no
// replacement was needed or possible).
func lexWithoutQuotedTabs(src string) (string, token.Tokens, rune) {
	toks := lexer.Tokenize(src)
	if !strings.Contains(src, "\t") {
		return src, toks, 0
	}
	ph := rune(0)
	for r := rune(0xE000); r <= 0xF8FF; r++ { // a private-use character
		if !strings.ContainsRune(src, r) {
			ph = r
			break
		}
	}
	if ph == 0 {
		return src, toks, 0
	}
	used := false
	for range maxTabRounds {
		al := align(src, toks)
		type span struct{ start, end int }
		var spans []span
		for _, tk := range toks {
			if tk.Type != token.DoubleQuoteType || !strings.Contains(tk.Origin, "\t") {
				continue
			}
			if start, ok := al.start[tk]; ok {
				spans = append(spans, span{start, al.end[tk]})
			}
		}
		// A double-quoted string the lexer gave up on (unterminated, or a
		// bad escape) misplaces its error the same way.
		if iv := al.invalid; iv != nil && strings.HasPrefix(src[iv[0]:], `"`) {
			spans = append(spans, span{iv[0], iv[1]})
		}
		changed := false
		for _, sp := range slices.Backward(spans) { // back to front keeps offsets valid
			fixed := replaceInteriorTabs(src[sp.start:sp.end], ph)
			if fixed != src[sp.start:sp.end] {
				src = src[:sp.start] + fixed + src[sp.end:]
				changed = true
			}
		}
		if !changed {
			break
		}
		used = true
		toks = lexer.Tokenize(src)
	}
	if !used {
		ph = 0
	}
	return src, toks, ph
}

// replaceInteriorTabs replaces, in the text of a double-quoted string,
// the tabs that are content and have more text after them on their line:
// not those that indent a continuation line or trail before a line break
// (YAML folds both away, and goccy handles them), nor an escaped tab.
func replaceInteriorTabs(quoted string, ph rune) string {
	var b strings.Builder
	lines := strings.Split(quoted, "\n")
	for i, line := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		lead := 0
		if i > 0 {
			lead = len(line) - len(strings.TrimLeft(line, " \t"))
		}
		trail := len(strings.TrimRight(line, " \t"))
		backslashes := 0
		for j, c := range line {
			if c == '\t' && j >= lead && j < trail && backslashes%2 == 0 {
				b.WriteRune(ph)
			} else {
				b.WriteRune(c)
			}
			if c == '\\' {
				backslashes++
			} else {
				backslashes = 0
			}
		}
	}
	return b.String()
}

// restoreTabs puts the tabs back into the double-quoted strings under n.
func restoreTabs(n ast.Node, ph rune, depth int) {
	if n == nil || ph == 0 || depth > 10000 {
		return
	}
	switch v := n.(type) {
	case *ast.StringNode:
		if v.Token != nil && v.Token.Type == token.DoubleQuoteType {
			v.Value = strings.ReplaceAll(v.Value, string(ph), "\t")
			v.Token.Value = v.Value
		}
	case *ast.MappingNode:
		for _, mv := range v.Values {
			restoreTabs(mv, ph, depth+1)
		}
	case *ast.MappingValueNode:
		restoreTabs(v.Key, ph, depth+1)
		restoreTabs(v.Value, ph, depth+1)
	case *ast.MappingKeyNode:
		restoreTabs(v.Value, ph, depth+1)
	case *ast.SequenceNode:
		for _, item := range v.Values {
			restoreTabs(item, ph, depth+1)
		}
	case *ast.AnchorNode:
		restoreTabs(v.Value, ph, depth+1)
	case *ast.TagNode:
		restoreTabs(v.Value, ph, depth+1)
	}
}
