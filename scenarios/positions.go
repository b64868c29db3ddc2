package scenarios

import (
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// goccy/go-yaml's token positions are mostly right, but not always: a
// multi-line plain scalar is positioned at its last character, and after a
// double-quoted string holding a tab the line count stops following the
// text. Messages must point at the right character, so the positions are
// recomputed here from the text itself, and written into the tokens once
// the parser (which steers by its own columns) is done with them.

// alignment maps each lexed token to where its text really starts and
// ends.
type alignment struct {
	src   string
	lines []int // byte offset of the start of each line
	start map[*token.Token]int
	end   map[*token.Token]int
	// byGoccy maps a position as goccy gave it to the true one, for the
	// empty values the parser adds, which copy the position of the token
	// before them.
	byGoccy map[Pos]Pos
	// invalid is the span of the token goccy's lexer gave up on, if any.
	invalid *[2]int
}

// align finds each token's text in src, in order. Tokens come in the
// order of the text, and between two of them there is only white space,
// so each must start where the white space after the previous one ends. A token's original text may
// differ from the source in white space (goccy drops trailing blanks in
// quoted strings), so it is matched word by word. Should a token not
// match, alignment stops there and the rest keep goccy's positions, which
// are right far more often than not: a guess would be worse.
func align(src string, toks token.Tokens) *alignment {
	a := &alignment{
		src:     src,
		lines:   lineStarts(src),
		start:   make(map[*token.Token]int, len(toks)),
		end:     make(map[*token.Token]int, len(toks)),
		byGoccy: make(map[Pos]Pos, len(toks)),
	}
	cursor := 0
	for _, tk := range toks {
		start, end, ok := matchWords(src, cursor, tk.Origin)
		if q := quoteOf(tk, src, cursor); q != 0 {
			// goccy's text for a quoted string leaves out parts of some
			// escapes ("\x41" keeps only the backslash); the quotes
			// delimit it instead.
			start = skipBlanks(src, cursor)
			end, ok = quotedEnd(src, start, q)
			if !ok && tk.Type == token.InvalidType {
				end, ok = len(src), true // unterminated: runs to the end
			}
		}
		if tk.Type == token.InvalidType {
			// Its text is whatever the scanner had buffered, and goccy's
			// position is where the scanner stopped, which is the point;
			// only the span is kept (see lexWithoutQuotedTabs).
			if ok {
				a.invalid = &[2]int{start, end}
			}
			break
		}
		if start == end && ok {
			continue // nothing but white space
		}
		if !ok {
			break
		}
		a.start[tk], a.end[tk] = start, end
		if p := tokPos(tk); p.IsValid() {
			if _, seen := a.byGoccy[p]; !seen {
				a.byGoccy[p] = a.offsetPos(start)
			}
		}
		cursor = end
	}
	return a
}

// quoteOf returns the quote character that starts a quoted string token
// (or the unterminated string the lexer gave up on) at the first non-blank
// character from offset from, or 0.
func quoteOf(tk *token.Token, src string, from int) byte {
	i := skipBlanks(src, from)
	if i >= len(src) {
		return 0
	}
	switch tk.Type {
	case token.DoubleQuoteType, token.SingleQuoteType, token.InvalidType:
		if c := src[i]; (c == '"' || c == '\'') && strings.HasPrefix(strings.TrimLeft(tk.Origin, " \t\n"), string(c)) {
			return c
		}
	}
	return 0
}

// quotedEnd returns the offset just past the string quoted with q that
// starts at start: a double-quoted one ends at the first double quote not
// escaped by a backslash, a single-quoted one at the first single quote
// that is not doubled.
func quotedEnd(src string, start int, q byte) (int, bool) {
	for i := start + 1; i < len(src); i++ {
		switch {
		case q == '"' && src[i] == '\\':
			i++ // skip the escaped character
		case src[i] == q && q == '\'' && i+1 < len(src) && src[i+1] == '\'':
			i++ // '' is a quote inside
		case src[i] == q:
			return i + 1, true
		}
	}
	return 0, false
}

// matchWords matches the words of a token's original text against src
// from offset from on, allowing any white space between them, and returns
// the span they cover.
func matchWords(src string, from int, origin string) (start, end int, ok bool) {
	words := strings.FieldsFunc(origin, isBlank)
	pos := skipBlanks(src, from)
	if len(words) == 0 {
		return pos, pos, true
	}
	start = pos
	for _, w := range words {
		if !strings.HasPrefix(src[pos:], w) {
			return 0, 0, false
		}
		pos = skipBlanks(src, pos+len(w))
	}
	end = pos
	for end > start && isBlank(rune(src[end-1])) {
		end--
	}
	return start, end, true
}

func isBlank(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }

func skipBlanks(src string, i int) int {
	for i < len(src) && isBlank(rune(src[i])) {
		i++
	}
	return i
}

// pos returns where tk starts: the aligned position, or goccy's.
func (a *alignment) pos(tk *token.Token) Pos {
	if off, ok := a.start[tk]; ok {
		return a.offsetPos(off)
	}
	return tokPos(tk)
}

// offsetPos converts a byte offset to a position, counting columns in
// characters as goccy does.
func (a *alignment) offsetPos(off int) Pos {
	// The last line starting at or before off.
	lo, hi := 0, len(a.lines)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if a.lines[mid] <= off {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return Pos{lo + 1, utf8.RuneCountInString(a.src[a.lines[lo]:off]) + 1}
}

// fix writes the true positions into the tokens, and into the empty values
// the parser added (found by walking the tree from body).
func (a *alignment) fix(toks token.Tokens, body ast.Node) {
	for _, tk := range toks {
		if off, ok := a.start[tk]; ok && tk.Position != nil {
			p := a.offsetPos(off)
			fixed := *tk.Position
			fixed.Line, fixed.Column = p.Line, p.Col
			tk.Position = &fixed
		}
	}
	a.fixNulls(body, 0)
}

// fixNulls re-points the implicit nulls under n. goccy places one a column
// after the start of the token before it; tokPos undoes the offset.
func (a *alignment) fixNulls(n ast.Node, depth int) {
	if n == nil || depth > 10000 {
		return
	}
	switch v := n.(type) {
	case *ast.NullNode:
		if tk := v.Token; tk != nil && tk.Type == token.ImplicitNullType && tk.Position != nil {
			if p, ok := a.byGoccy[tokPos(tk)]; ok {
				fixed := *tk.Position
				// tokPos subtracts one column from an implicit null.
				fixed.Line, fixed.Column = p.Line, p.Col+1
				v.Token.Position = &fixed
			}
		}
	case *ast.MappingNode:
		for _, mv := range v.Values {
			a.fixNulls(mv, depth+1)
		}
	case *ast.MappingValueNode:
		a.fixNulls(v.Key, depth+1)
		a.fixNulls(v.Value, depth+1)
	case *ast.MappingKeyNode:
		a.fixNulls(v.Value, depth+1)
	case *ast.SequenceNode:
		for _, item := range v.Values {
			a.fixNulls(item, depth+1)
		}
	case *ast.AnchorNode:
		a.fixNulls(v.Value, depth+1)
	case *ast.TagNode:
		a.fixNulls(v.Value, depth+1)
	}
}

// clamp keeps p inside the text. After text goccy misreads (malformed
// escapes in quoted strings, mostly) its positions can run past the end
// of a line, and a message must point at a character that is there.
func (a *alignment) clamp(p Pos) Pos {
	switch {
	case !p.IsValid():
		return Pos{1, 1}
	case p.Line > len(a.lines):
		return a.offsetPos(len(a.src))
	}
	end := len(a.src)
	if p.Line < len(a.lines) {
		end = a.lines[p.Line] - 1 // the line break
	}
	maxCol := utf8.RuneCountInString(a.src[a.lines[p.Line-1]:end]) + 1
	p.Col = min(max(p.Col, 1), maxCol)
	return p
}

// lineStarts returns the byte offset of the start of each line of src.
func lineStarts(src string) []int {
	starts := []int{0}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}
