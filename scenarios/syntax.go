package scenarios

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/token"
)

// syntaxError turns a YAML parse failure into an Error at the first
// character where the text stops being valid YAML, as SCENARIOS.md
// requires. goccy/go-yaml mostly reports that token, but not always:
//
//   - an unclosed or mismatched flow collection ("nodes: [1, 2, 3}") is
//     reported at its opening bracket; the text breaks at the bracket that
//     does not match, or at the end of the file if none comes;
//   - "a: b: c" is reported at "b"; the text breaks at the second ':';
//   - a tab before a key is reported at the key; the text breaks at the
//     tab;
//   - an unterminated quoted string is reported at its opening quote; the
//     text breaks at the end of the file, where the closing quote should
//     have been.
//
// The correction uses scan, the tokens' brackets (see scanBrackets), and
// picks the earlier of the first bracket that closes the wrong thing and
// the (corrected) position goccy reports.
//
// goccy also accepts some text YAML forbids, such as "[1, 2,\n 3 }]" (a
// plain scalar "3 }"); syntaxError is called with a nil err when the parse
// succeeded, and reports such text from the scan alone, or returns nil.
func syntaxError(file string, src []byte, toks token.Tokens, scan bracketScan, err error) *Error {
	if err == nil {
		if !scan.bad.IsValid() {
			return nil
		}
		err = errors.New(scan.msg)
	}
	msg := err.Error()
	var gpos Pos
	var gtk *token.Token
	var se *yaml.SyntaxError
	if errors.As(err, &se) {
		msg, gtk, gpos = se.Message, se.Token, tokPos(se.Token)
	}

	switch {
	case strings.HasPrefix(msg, "sequence end token") || strings.HasPrefix(msg, "could not find flow mapping end token"):
		// Reported at the opening bracket, which is fine in itself.
		gpos = Pos{}
	case msg == "mapping value is not allowed in this context":
		if gtk != nil && gtk.Next != nil && gtk.Next.Type == token.MappingValueType {
			gpos = tokPos(gtk.Next)
		}
	case strings.Contains(msg, "tab character") || strings.Contains(msg, "'\t'"):
		gpos = tabBefore(src, gpos)
	case strings.HasPrefix(msg, "could not find end character of"):
		kind := strings.TrimSuffix(strings.TrimPrefix(msg, "could not find end character of "), " text")
		msg = fmt.Sprintf("unexpected end of file: the %s string at %s is never closed", kind, gpos)
		gpos = endPos(src)
	}

	// goccy quotes a tab or line break as itself; a message is one line.
	msg = strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(msg)
	pos, text := gpos, "syntax error: "+msg
	switch {
	case scan.bad.IsValid() && (!gpos.IsValid() || !gpos.before(scan.bad)):
		pos, text = scan.bad, "syntax error: "+scan.msg
	case !gpos.IsValid() && scan.open != nil:
		pos = endPos(src)
		text = fmt.Sprintf("syntax error: unexpected end of file: the '%c' at %s is never closed", scan.open.c, scan.open.pos)
	case !gpos.IsValid():
		pos = Pos{1, 1}
	}
	field := ""
	if scan.outer != nil && scan.outer.tk != nil && scan.outer.pos.before(pos) {
		field = keyBefore(scan.outer.tk)
	}
	if field == "" {
		field = lineKey(toks, pos)
	}
	if field != "" {
		text = field + ": " + text
	}
	return &Error{File: file, Line: pos.Line, Col: pos.Col, Msg: text}
}

// bracketScan is what scanBrackets found.
type bracketScan struct {
	// bad is the first bracket that breaks the text (zero if none), msg
	// says why.
	bad Pos
	msg string
	// open is the innermost bracket still open at the end (or at bad),
	// outer the outermost; nil if none is.
	open, outer *opener
	// tooDeep says that bad is a bracket nested beyond MaxFlowDepth.
	tooDeep bool
}

// opener is an open flow collection.
type opener struct {
	c   rune
	pos Pos
	// tk is the lexer's token for it, nil for a bracket found inside a
	// plain scalar.
	tk *token.Token
}

// scanBrackets follows the flow collections of the token stream and finds
// the first bracket that closes nothing or the wrong thing, or nests too
// deep. goccy's lexer lets a plain scalar in a flow collection run on over
// brackets ("3}" in "[1, 2, 3}"; YAML allows no bracket there), so such
// scalars are read again, character by character.
func scanBrackets(a *alignment, toks token.Tokens) bracketScan {
	var stack []opener
	var out bracketScan
	// bracket handles one bracket and reports whether scanning goes on.
	bracket := func(c rune, pos Pos, tk *token.Token) bool {
		switch c {
		case '[', '{':
			if len(stack) == MaxFlowDepth {
				out.bad, out.tooDeep = pos, true
				out.msg = fmt.Sprintf("flow collections ([...] and {...}) nested more than %d deep", MaxFlowDepth)
				return false
			}
			stack = append(stack, opener{c, pos, tk})
			return true
		}
		if len(stack) == 0 {
			out.bad, out.msg = pos, fmt.Sprintf("'%c' closes nothing", c)
			return false
		}
		top := stack[len(stack)-1]
		if want := closerOf(top.c); c != want {
			out.bad = pos
			out.msg = fmt.Sprintf("expected ',' or '%c' (to close the '%c' at %s), found '%c'", want, top.c, top.pos, c)
			return false
		}
		stack = stack[:len(stack)-1]
		if len(stack) == 0 {
			out.outer = &top // names the field if the text breaks after it
		}
		return true
	}
scan:
	for _, tk := range toks {
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType, token.SequenceEndType, token.MappingEndType:
			if !bracket(rune(tk.Value[0]), a.pos(tk), tk) {
				break scan
			}
		case token.StringType:
			if len(stack) == 0 || !strings.ContainsAny(tk.Origin, "[]{}") {
				continue
			}
			start, found := a.start[tk]
			if !found {
				continue
			}
			text := strings.Trim(tk.Origin, " \t\n")
			closedAt := Pos{}
			pos := a.offsetPos(start)
			for i, c := range text {
				if i > 0 {
					if text[i-1] == '\n' {
						pos = Pos{pos.Line + 1, 1}
					} else {
						pos.Col++
					}
				}
				if closedAt.IsValid() {
					// The outermost collection has closed: nothing but a
					// comment may follow on its line.
					if c == ' ' || c == '\t' || c == '\n' {
						continue
					}
					if c != '#' {
						out.bad, out.msg = pos, fmt.Sprintf("unexpected %q after the flow collection closed at %s", c, closedAt)
					}
					break scan
				}
				switch c {
				case '[', ']', '{', '}':
					if !bracket(c, pos, nil) {
						break scan
					}
					if len(stack) == 0 {
						closedAt = pos
					}
				}
			}
		}
	}
	if len(stack) > 0 {
		out.open, out.outer = &stack[len(stack)-1], &stack[0]
	}
	return out
}

func closerOf(c rune) rune {
	if c == '[' {
		return ']'
	}
	return '}'
}

// keyBefore returns the key whose value starts with tk ("nodes" for the
// '[' of "nodes: [1, 2}"), or "".
func keyBefore(tk *token.Token) string {
	colon := tk.Prev
	for colon != nil && colon.Type == token.CommentType {
		colon = colon.Prev
	}
	if colon == nil || colon.Type != token.MappingValueType || colon.Prev == nil {
		return ""
	}
	return plainKey(colon.Prev)
}

// lineKey returns the first key on pos's line before pos, or "".
func lineKey(toks token.Tokens, pos Pos) string {
	for _, tk := range toks {
		p := tokPos(tk)
		if p.Line < pos.Line {
			continue
		}
		if p.Line > pos.Line || !p.before(pos) {
			return ""
		}
		if tk.Next != nil && tk.Next.Type == token.MappingValueType && tokPos(tk.Next).before(pos) {
			return plainKey(tk)
		}
	}
	return ""
}

// plainKey returns tk's text if it looks like a key a scenario uses.
func plainKey(tk *token.Token) string {
	if tk.Type != token.StringType || tk.Value == "" || len(tk.Value) > 40 || strings.ContainsAny(tk.Value, " \t\n") {
		return ""
	}
	return tk.Value
}

// tabBefore returns the position of the first tab in the indentation of
// pos's line, or pos if there is none (goccy puts tab errors at the token
// after the tab).
func tabBefore(src []byte, pos Pos) Pos {
	if !pos.IsValid() {
		return pos
	}
	lines := strings.Split(string(src), "\n")
	if pos.Line > len(lines) {
		return pos
	}
	col := 1
	for _, r := range lines[pos.Line-1] {
		if col >= pos.Col {
			break
		}
		switch r {
		case '\t':
			return Pos{pos.Line, col}
		case ' ':
			col++
		default:
			return pos
		}
	}
	return pos
}

// endPos is where the text ends: just after its last character, on the
// last line that has one. (A final newline ends a line; it does not open
// one an editor would show.)
func endPos(src []byte) Pos {
	s := strings.TrimSuffix(string(src), "\n")
	line := 1 + strings.Count(s, "\n")
	last := s[strings.LastIndexByte(s, '\n')+1:]
	return Pos{line, utf8.RuneCountInString(strings.TrimSuffix(last, "\r")) + 1}
}
