package host

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A Loop runs what it is given on the node's loop (inside the callback
// bracket, so never beside another callback) and waits for it.
func TestLoopRunsOnTheLoopAndWaits(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	l := tn.Loop()
	for range 50 {
		done := make(chan struct{})
		ran := false
		if err := l.Do(func() {
			ran = tn.onLoop.Load()
			close(done)
		}); err != nil {
			t.Fatalf("Do: %v", err)
		}
		if err := l.Wait(context.Background(), done); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if !ran {
			t.Fatal("Do's function ran without holding the loop")
		}
	}
}

// Wait gives up with ctx's error, and with ErrClosed once the node is
// closed: what was to close done will never run.
func TestLoopWaitEnds(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	l := tn.Loop()
	never := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, never); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline: %v, want context.DeadlineExceeded", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- l.Wait(context.Background(), never) }()
	time.Sleep(10 * time.Millisecond)
	tn.closeNode(t)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait across Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if err := l.Do(func() {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v, want ErrClosed", err)
	}
	// A done that is closed wins even after Close.
	closed := make(chan struct{})
	close(closed)
	if err := l.Wait(context.Background(), closed); err != nil {
		t.Fatalf("Wait on a closed done after Close: %v", err)
	}
}
