package wire

import (
	"errors"
	"strconv"
)

// DropReason classifies why a frame was dropped, so that the caller can
// keep one counter per reason (an array indexed by DropReason, of length
// NumDropReasons) instead of matching errors itself. The reasons tell
// apart the faults an operator acts on differently: stray traffic
// (DropMagic), a peer on another version (DropVersion), a key rotation
// done out of order (DropUnknownKey), tampering or a wrong key (DropMAC),
// a buggy peer (DropBadHeader), stale routing (DropNotForMe,
// DropStaleBoot) and replays (DropReplay).
type DropReason uint8

// Drop reasons. A later version may insert reasons, renumbering the rest:
// export them by name (String), not by number.
const (
	DropNone       DropReason = iota // no error: nothing was dropped
	DropShort                        // ErrShort
	DropMagic                        // ErrMagic
	DropVersion                      // ErrVersion
	DropFlags                        // ErrFlags
	DropLength                       // ErrLength
	DropUnknownKey                   // ErrUnknownKey
	DropMAC                          // ErrMAC
	DropBadHeader                    // ErrBadHeader
	DropNotForMe                     // ErrNotForMe
	DropStaleBoot                    // ErrStaleBoot
	DropReplay                       // ErrReplay
	DropOther                        // any other error

	// NumDropReasons is the number of reasons, for sizing counter arrays.
	NumDropReasons = int(iota)
)

var dropNames = [NumDropReasons]string{
	DropNone:       "none",
	DropShort:      "short",
	DropMagic:      "magic",
	DropVersion:    "version",
	DropFlags:      "flags",
	DropLength:     "length",
	DropUnknownKey: "unknown-key",
	DropMAC:        "mac",
	DropBadHeader:  "bad-header",
	DropNotForMe:   "not-for-me",
	DropStaleBoot:  "stale-boot",
	DropReplay:     "replay",
	DropOther:      "other",
}

// dropErrs pairs each error with its reason, in DropReason order.
var dropErrs = [...]struct {
	err    error
	reason DropReason
}{
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
}

// String is the reason's short name, suitable as a metric label.
func (r DropReason) String() string {
	if int(r) < NumDropReasons {
		return dropNames[r]
	}
	return "DropReason(" + strconv.Itoa(int(r)) + ")"
}

// Reason maps an error from Open, Header.Check (or ErrReplay) to its
// DropReason, looking through wrapping. nil is DropNone; an error from
// elsewhere, including Seal's sender-side ErrTooLarge and ErrEmptyKeyring,
// is DropOther.
func Reason(err error) DropReason {
	if err == nil {
		return DropNone
	}
	// Open returns the sentinels themselves: find them without the
	// reflection errors.Is may do.
	for _, e := range dropErrs {
		if err == e.err {
			return e.reason
		}
	}
	for _, e := range dropErrs {
		if errors.Is(err, e.err) {
			return e.reason
		}
	}
	return DropOther
}
