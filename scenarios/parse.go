package scenarios

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// MaxFileSize bounds a scenario file. A scenario is a few kilobytes (the
// file that uses every action once is 1.3 KB), so 64 KiB is room for well
// over a thousand steps; the bound matters because the YAML parser takes
// time that grows with the square of some shapes of input (a mapping with
// thousands of keys, "- - - -" nested on one line), and a stray argument
// (a log, a binary) must not tie the lab up. At the bound the worst such
// input takes under a second.
const MaxFileSize = 64 << 10

// MaxFlowDepth bounds the nesting of flow collections ([...] and {...}),
// for the same reason: the deepest a scenario needs is 3.
const MaxFlowDepth = 64

// aliasBudget bounds how many YAML nodes aliases may expand to in one
// file, so that a few nested aliases cannot make a small file decode into
// an enormous scenario ("billion laughs").
const aliasBudget = 1 << 16

// namePattern is the contract's pattern for scenario names.
var namePattern = regexp.MustCompile(`^[a-z0-9-]+$`)

// ParseFile reads and parses one scenario file. Problems with the content
// come back as an ErrorList; failing to read the file comes back as the
// os error, prefixed.
func ParseFile(path string) (*Scenario, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	return Parse(path, src)
}

// Parse parses and validates the scenario in src; file names it in
// messages. It checks everything that can be checked without running and
// reports every problem it finds: on failure the error is an ErrorList
// sorted by position (or, if the YAML library itself panics, an error
// wrapping ErrInternal), and the Scenario is nil. On success every default
// is applied.
func Parse(file string, src []byte) (s *Scenario, err error) {
	d := &decoder{file: file}
	s = d.parse(src)
	if d.internal != nil {
		return nil, d.internal
	}
	d.errs.Sort()
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return s, nil
}

// decoder turns the YAML syntax tree into a Scenario, collecting errors
// instead of stopping at the first, so that one run of `clusterlab check`
// lists every mistake in a file.
type decoder struct {
	file     string
	errs     ErrorList
	internal error

	// anchors maps an anchor name to its definitions in file order, for
	// resolving aliases (YAML lets a name be redefined; an alias means the
	// closest definition before it).
	anchors map[string][]anchorDef
	sizes   map[ast.Node]int
	budget  int

	// nodes is the scenario's node list, nil while it is unknown (missing
	// or invalid): then membership checks are skipped rather than
	// repeating one mistake at every step.
	nodes []int
	// states tracks which states each node can be in as steps run, to
	// reject steps that are certain to fail; nil when nodes is unknown.
	states *stateTracker

	// al holds the true positions of the tokens, once lexed.
	al *alignment
}

type anchorDef struct {
	pos   Pos
	value ast.Node
}

// errorf records an error at pos.
func (d *decoder) errorf(pos Pos, format string, args ...any) {
	if d.al != nil {
		pos = d.al.clamp(pos)
	} else if !pos.IsValid() {
		pos = Pos{1, 1}
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: pos.Line, Col: pos.Col, Msg: fmt.Sprintf(format, args...)})
}

var utf8BOM = []byte("\uFEFF")

func (d *decoder) parse(src []byte) *Scenario {
	if len(src) > MaxFileSize {
		d.errorf(Pos{1, 1}, "file is %d bytes, more than the %d a scenario file may have", len(src), MaxFileSize)
		return nil
	}
	// Editors on some systems add a byte order mark; it is not content.
	src = bytes.TrimPrefix(src, utf8BOM)
	// YAML breaks lines at CR LF, LF and a lone CR alike, and so does
	// goccy; with one kind of break, lines are counted the same way
	// everywhere here. (The content is unchanged: YAML normalizes line
	// breaks inside scalars to LF.)
	src = normalizeBreaks(src)
	if !utf8.Valid(src) {
		d.errorf(invalidUTF8Pos(src), "invalid UTF-8: a scenario file is Unicode text")
		return nil
	}
	type lexed struct {
		text string
		toks token.Tokens
		ph   rune
	}
	lx, err := guard(func() (lexed, error) {
		text, toks, ph := lexWithoutQuotedTabs(string(src))
		return lexed{text, toks, ph}, nil
	})
	if d.internal = internalError(d.file, err); d.internal != nil {
		return nil
	}
	// From here on src is the lexed text: the same lines and columns.
	src, toks := []byte(lx.text), lx.toks
	al := align(lx.text, toks)
	d.al = al
	scan := scanBrackets(al, toks)
	if scan.tooDeep {
		// Not handed to the parser, whose time grows with the square of
		// the depth.
		d.errorf(scan.bad, "%s", scan.msg)
		return nil
	}
	// Duplicate keys are reported by the decoder, with every other error,
	// rather than as a parse failure that hides the rest.
	f, err := guard(func() (*ast.File, error) { return parser.Parse(toks, 0, parser.AllowDuplicateMapKey()) })
	if d.internal = internalError(d.file, err); d.internal != nil {
		return nil
	}
	if f != nil {
		for _, doc := range f.Docs {
			al.fix(nil, doc.Body)
			restoreTabs(doc.Body, lx.ph, 0)
		}
	}
	al.fix(toks, nil)
	if e := syntaxError(d.file, src, toks, scan, err); e != nil {
		d.errorf(e.Pos(), "%s", e.Msg)
		return nil
	}
	// The scenario is the first document with content; "---" markers
	// around it, and empty documents, are harmless.
	var body ast.Node
	for _, doc := range f.Docs {
		switch {
		case doc.Body == nil:
		case body == nil:
			body = doc.Body
		default:
			pos := tokPos(doc.Start)
			if !pos.IsValid() {
				pos = startPos(doc.Body)
			}
			d.errorf(pos, "a scenario file holds one YAML document; this starts a second")
		}
		if len(d.errs) > 0 {
			break
		}
	}
	if body == nil {
		d.errorf(Pos{1, 1}, "empty file: a scenario needs at least name, nodes and steps")
		return nil
	}
	d.anchors = map[string][]anchorDef{}
	d.sizes = map[ast.Node]int{}
	d.budget = aliasBudget
	d.collectAnchors(body, 0)
	return d.scenario(body)
}

// internalError recognizes a panic caught by guard.
func internalError(file string, err error) error {
	if p, ok := err.(panicError); ok {
		return fmt.Errorf("%w: the YAML parser panicked on %s: %v", ErrInternal, file, p.value)
	}
	return nil
}

type panicError struct{ value any }

func (p panicError) Error() string { return fmt.Sprint("panic: ", p.value) }

// guard runs the YAML lexer or parser, turning a panic inside it into an
// error: a library bug must not take the whole lab down.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return f()
}

// normalizeBreaks turns every CR LF and lone CR into LF.
func normalizeBreaks(src []byte) []byte {
	if !bytes.ContainsRune(src, '\r') {
		return src
	}
	src = bytes.ReplaceAll(src, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(src, []byte("\r"), []byte("\n"))
}

// invalidUTF8Pos returns the position of the first byte of src that is
// not UTF-8.
func invalidUTF8Pos(src []byte) Pos {
	line, col := 1, 1
	for len(src) > 0 {
		r, n := utf8.DecodeRune(src)
		if r == utf8.RuneError && n <= 1 {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		src = src[n:]
	}
	return Pos{line, col}
}

// Positions and shapes of syntax tree nodes.

func tokPos(tk *token.Token) Pos {
	if tk == nil || tk.Position == nil {
		return Pos{}
	}
	if tk.Type == token.ImplicitNullType && tk.Position.Column > 1 {
		// goccy places an empty value one column after the start of the
		// token before it ("-" or a key), which may be past the end of
		// the line; point at that token instead.
		return Pos{tk.Position.Line, tk.Position.Column - 1}
	}
	return Pos{tk.Position.Line, tk.Position.Column}
}

// startPos returns where a node's text begins. (goccy positions a block
// mapping at its first ':', and a key-value pair at its ':'.)
func startPos(n ast.Node) Pos {
	switch v := n.(type) {
	case nil:
		return Pos{}
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 {
			return startPos(v.Values[0])
		}
		return tokPos(v.Start)
	case *ast.MappingValueNode:
		return startPos(v.Key)
	case *ast.SequenceNode:
		return tokPos(v.Start)
	case *ast.MappingKeyNode:
		return tokPos(v.Start)
	case *ast.AnchorNode:
		return tokPos(v.Start)
	case *ast.AliasNode:
		return tokPos(v.Start)
	case *ast.TagNode:
		return tokPos(v.Start)
	case *ast.LiteralNode:
		return tokPos(v.Start)
	}
	return tokPos(n.GetToken())
}

func mappingPairs(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}, true
	}
	return nil, false
}

func sequenceItems(n ast.Node) ([]ast.Node, bool) {
	if v, ok := n.(*ast.SequenceNode); ok {
		return v.Values, true
	}
	return nil, false
}

func isNull(n ast.Node) bool {
	if n == nil {
		return true
	}
	_, ok := n.(*ast.NullNode)
	return ok
}

// scalarText returns the text of a scalar as written (unquoted), whatever
// type YAML would resolve it to: a name like 2024 or a duration like 0 is
// read by the field's own rules, not by YAML's.
func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value == nil {
			return "", true
		}
		return v.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		if tk := n.GetToken(); tk != nil {
			return tk.Value, true
		}
	}
	return "", false
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n ast.Node) string {
	switch n.(type) {
	case nil, *ast.NullNode:
		return "nothing"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		s, _ := scalarText(n)
		return quoteShort(s)
	}
	if s, ok := scalarText(n); ok {
		return s
	}
	return "a " + strings.ToLower(n.Type().String())
}

// plainLabel is text that reads well unquoted in a message.
var plainLabel = regexp.MustCompile(`^[A-Za-z0-9_.!-]{1,40}$`)

// label writes a key or name from the file for a message: as it is when
// it is plain, quoted otherwise, so that a message stays one line.
func label(s string) string {
	if plainLabel.MatchString(s) {
		return s
	}
	return quoteShort(s)
}

// quoteShort quotes s, cut to a length that fits a message line.
func quoteShort(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "..."
	}
	return strconv.Quote(s)
}

// Anchors and aliases.

// collectAnchors records every anchor under n. depth bounds the recursion
// on pathologically nested input.
func (d *decoder) collectAnchors(n ast.Node, depth int) {
	if n == nil || depth > 10000 {
		return
	}
	switch v := n.(type) {
	case *ast.AnchorNode:
		if v.Name != nil {
			name := v.Name.GetToken().Value
			d.anchors[name] = append(d.anchors[name], anchorDef{tokPos(v.Start), v.Value})
		}
		d.collectAnchors(v.Value, depth+1)
	case *ast.MappingNode:
		for _, mv := range v.Values {
			d.collectAnchors(mv, depth+1)
		}
	case *ast.MappingValueNode:
		d.collectAnchors(v.Key, depth+1)
		d.collectAnchors(v.Value, depth+1)
	case *ast.MappingKeyNode:
		d.collectAnchors(v.Value, depth+1)
	case *ast.SequenceNode:
		for _, item := range v.Values {
			d.collectAnchors(item, depth+1)
		}
	case *ast.TagNode:
		d.collectAnchors(v.Value, depth+1)
	}
}

// size counts the nodes under n, for the alias budget.
func (d *decoder) size(n ast.Node, depth int) int {
	if n == nil || depth > 10000 {
		return 1
	}
	if s, ok := d.sizes[n]; ok {
		return s
	}
	s := 1
	switch v := n.(type) {
	case *ast.AnchorNode:
		s += d.size(v.Value, depth+1)
	case *ast.MappingNode:
		for _, mv := range v.Values {
			s += d.size(mv, depth+1)
		}
	case *ast.MappingValueNode:
		s += d.size(v.Key, depth+1) + d.size(v.Value, depth+1)
	case *ast.SequenceNode:
		for _, item := range v.Values {
			s += d.size(item, depth+1)
		}
	case *ast.TagNode:
		s += d.size(v.Value, depth+1)
	}
	d.sizes[n] = s
	return s
}

// resolve looks through anchors and aliases to the node that holds the
// value. It returns nil, having reported why, for what the scenario
// format does not take: YAML tags, undefined aliases, aliases beyond the
// budget. Decoders treat nil as "already reported".
func (d *decoder) resolve(n ast.Node) ast.Node {
	for range 64 {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
			if n == nil {
				return &ast.NullNode{BaseNode: &ast.BaseNode{}, Token: v.Start}
			}
		case *ast.AliasNode:
			pos := tokPos(v.Start)
			name := ""
			if v.Value != nil {
				name = v.Value.GetToken().Value
			}
			var target *anchorDef
			for i, def := range d.anchors[name] {
				if def.pos.before(pos) {
					target = &d.anchors[name][i]
				}
			}
			if target == nil {
				d.errorf(pos, "alias *%s: no anchor &%s before it", label(name), label(name))
				return nil
			}
			if d.budget <= 0 {
				return nil // reported when it ran out
			}
			if d.budget -= d.size(target.value, 0); d.budget <= 0 {
				d.errorf(pos, "alias *%s: aliases expand to more than %d YAML nodes", label(name), aliasBudget)
				return nil
			}
			n = target.value
			if n == nil {
				return &ast.NullNode{BaseNode: &ast.BaseNode{}, Token: v.Start}
			}
		case *ast.TagNode:
			d.errorf(tokPos(v.Start), "YAML tags such as %s are not supported in scenario files", label(v.Start.Value))
			return nil
		default:
			return n
		}
	}
	d.errorf(startPos(n), "aliases nested too deeply")
	return nil
}

// Mappings.

// field is one key-value pair of a mapping, its value resolved.
type field struct {
	name   string
	keyPos Pos
	// value is nil when resolving it failed (already reported).
	value ast.Node
	// valuePos is where the value is written; for a missing value, the
	// key, since an empty value has no text to point at.
	valuePos Pos
}

// missing reports whether the field was written without a value.
func (f field) missing() bool { return f.value != nil && isNull(f.value) }

// fields returns the pairs of mapping n in file order. It reports keys that
// are not plain names, merge keys and duplicate keys (keeping the first),
// and passes every name to unknown, which reports names the caller does
// not take and returns false for them.
func (d *decoder) fields(n ast.Node, unknown func(name string, pos Pos) bool) []field {
	pairs, _ := mappingPairs(n)
	var out []field
	first := map[string]Pos{}
	for _, mv := range pairs {
		if mv == nil {
			continue
		}
		name, pos, ok := d.keyName(mv.Key)
		if !ok {
			continue
		}
		if p, dup := first[name]; dup {
			d.errorf(pos, "%s: duplicate key (first at %s)", label(name), p)
			continue
		}
		first[name] = pos
		if !unknown(name, pos) {
			continue
		}
		f := field{name: name, keyPos: pos, valuePos: pos}
		if mv.Value != nil {
			f.value = d.resolve(mv.Value)
			if !isNull(mv.Value) {
				f.valuePos = startPos(mv.Value)
			}
		} else {
			f.value = &ast.NullNode{BaseNode: &ast.BaseNode{}}
		}
		out = append(out, f)
	}
	return out
}

// keyName returns a mapping key as a plain name.
func (d *decoder) keyName(k ast.Node) (string, Pos, bool) {
	for range 8 {
		switch v := k.(type) {
		case *ast.MappingKeyNode:
			k = v.Value
			continue
		case *ast.AnchorNode:
			k = v.Value
			continue
		}
		break
	}
	pos := startPos(k)
	switch v := k.(type) {
	case nil:
		d.errorf(pos, "empty key")
		return "", pos, false
	case *ast.MergeKeyNode:
		d.errorf(pos, "merge keys (<<) are not supported in scenario files")
		return "", pos, false
	case *ast.AliasNode:
		d.errorf(pos, "aliases cannot be keys in scenario files")
		return "", pos, false
	case *ast.TagNode:
		d.errorf(pos, "YAML tags such as %s are not supported in scenario files", label(v.Start.Value))
		return "", pos, false
	case *ast.NullNode:
		d.errorf(pos, "empty key")
		return "", pos, false
	}
	if s, ok := scalarText(k); ok {
		return s, pos, true
	}
	d.errorf(pos, "a key must be a plain name, not %s", describe(k))
	return "", pos, false
}

// knownKeys returns an unknown-key callback for a mapping that takes
// exactly the keys in known; path prefixes the message ("config.").
func (d *decoder) knownKeys(path string, known []string) func(string, Pos) bool {
	return func(name string, pos Pos) bool {
		if slices.Contains(known, name) {
			return true
		}
		if hint, ok := keyHints[path+name]; ok {
			d.errorf(pos, "%s%s: unknown key; %s", path, label(name), hint)
			return false
		}
		if guess := suggest(name, known); guess != "" {
			d.errorf(pos, "%s%s: unknown key (did you mean %s?)", path, label(name), guess)
		} else {
			d.errorf(pos, "%s%s: unknown key; want %s", path, label(name), oneOf(known))
		}
		return false
	}
}

// keyHints explains unknown keys that are easy to put in the wrong place.
var keyHints = map[string]string{
	"nemesis.timeout": "timeout belongs to the step, beside nemesis, not inside it",
	"expect.timeout":  "expect asserts at once; to wait, put a wait step before it",
	"expect.at":       "at belongs to the step, beside expect, not inside it",
}

// oneOf writes "a, b or c".
func oneOf(words []string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// suggest returns the known word closest to name if it is close enough to
// be a typo (an edit distance of at most a third of its length, and 2).
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(name, k); dist < bestDist && dist*3 <= len(k) {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance (Levenshtein
// with transpositions, the commonest typo: "nodse"). Long inputs are no
// typos, and are not worth the work.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
