package wire

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want DropReason
	}{
		{nil, DropNone},
		{ErrShort, DropShort},
		{ErrMagic, DropMagic},
		{ErrVersion, DropVersion},
		{ErrFlags, DropFlags},
		{ErrLength, DropLength},
		{ErrUnknownKey, DropUnknownKey},
		{ErrMAC, DropMAC},
		{ErrBadHeader, DropBadHeader},
		{ErrNotForMe, DropNotForMe},
		{ErrStaleBoot, DropStaleBoot},
		{ErrReplay, DropReplay},
		{fmt.Errorf("ics: from n4: %w", ErrMAC), DropMAC},
		{fmt.Errorf("%w: from node is 0", ErrBadHeader), DropBadHeader},
		{ErrTooLarge, DropOther},
		{ErrEmptyKeyring, DropOther},
		{errors.New("something else"), DropOther},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestReasonNamesAndErrors checks that every reason has its own name and
// that every error the package exports says "wire: ".
func TestReasonNamesAndErrors(t *testing.T) {
	names := map[string]DropReason{}
	for r := range DropReason(NumDropReasons) {
		name := r.String()
		if name == "" || strings.HasPrefix(name, "DropReason(") {
			t.Errorf("reason %d has no name", r)
		}
		if other, dup := names[name]; dup {
			t.Errorf("reasons %d and %d are both %q", other, r, name)
		}
		names[name] = r
	}
	if got := DropReason(NumDropReasons).String(); got != fmt.Sprintf("DropReason(%d)", NumDropReasons) {
		t.Errorf("out of range String = %q", got)
	}
	for i, e := range dropErrs {
		if e.reason != DropReason(i+1) {
			t.Errorf("dropErrs[%d] is %v, want reasons in order", i, e.reason)
		}
	}
	for _, err := range []error{
		ErrShort, ErrMagic, ErrVersion, ErrFlags, ErrLength, ErrUnknownKey, ErrMAC, ErrBadHeader,
		ErrTooLarge, ErrNotForMe, ErrStaleBoot, ErrReplay, ErrWeakKey, ErrDuplicateKey,
		ErrRemovePrimary, ErrEmptyKeyring,
	} {
		if !strings.HasPrefix(err.Error(), "wire: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
}

func TestReasonAllocations(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Reason(ErrMAC) }); n != 0 {
		t.Errorf("Reason allocates %v times", n)
	}
}
