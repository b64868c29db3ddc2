package scenarios

import (
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a scenario file, at the key or value it is
// about. Msg starts with the field it concerns ("crash: node 9 is not in
// nodes (1-5)").
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats e as FILE:LINE:COL: message, the form SCENARIOS.md fixes
// and editors jump to. An error with no position (from Validate on a
// scenario built in code) drops it, and one with no file name says which
// package it comes from instead: "scenarios: step 2: ...".
func (e *Error) Error() string {
	var b strings.Builder
	if e.File == "" {
		b.WriteString("scenarios: ")
	} else {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Col))
		b.WriteString(": ")
	} else if e.File != "" {
		b.WriteString(" ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Pos returns where e is.
func (e *Error) Pos() Pos { return Pos{e.Line, e.Col} }

// ErrorList is every problem found in one scenario, sorted by position.
// Parse and Validate return one (as an error) when anything is wrong, so
// that a user fixes a file in one pass rather than one error per run.
type ErrorList []*Error

// Error joins the errors, one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each *Error to errors.As and errors.Is.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Sort orders l by position, keeping the order of errors at the same
// position, and drops exact duplicates (one mistake can be reached by two
// paths, such as an alias used twice).
func (l *ErrorList) Sort() {
	slices.SortStableFunc(*l, func(a, b *Error) int {
		switch {
		case a.Pos().before(b.Pos()):
			return -1
		case b.Pos().before(a.Pos()):
			return 1
		}
		return 0
	})
	*l = slices.CompactFunc(*l, func(a, b *Error) bool { return *a == *b })
}

// Err returns l as an error, or nil when it is empty: an empty ErrorList
// stored in an error interface would not compare equal to nil.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// ErrInternal marks a failure of the parser itself rather than of the
// file (a panic inside the YAML library); the CLI reports it as an
// internal error, not as invalid input.
var ErrInternal = errors.New("scenarios: internal error")
