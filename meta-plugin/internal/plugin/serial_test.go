package plugin

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A call of a container waits for the running one, and no longer than its own context allows (then it is
// "try again later"); other containers' calls do not wait; the last unlock leaves no entry behind.
func TestContainerLocks(t *testing.T) {
	l := newContainerLocks()
	unlockA, err := l.lock(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	unlockB, err := l.lock(t.Context(), "b")
	if err != nil {
		t.Fatalf("container b waits for container a: %v", err)
	}
	unlockB()

	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.lock(short, "a"); !errors.Is(err, errTryAgain) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call of a while the first runs: %v, want try again later after its deadline", err)
	}

	got := make(chan time.Time, 1)
	go func() {
		unlock, err := l.lock(t.Context(), "a")
		if err != nil {
			t.Error(err)
			return
		}
		got <- time.Now()
		unlock()
	}()
	time.Sleep(50 * time.Millisecond)
	released := time.Now()
	unlockA()
	unlockA() // a second unlock is harmless
	if at := <-got; at.Before(released) {
		t.Errorf("the waiting call got the lock %v before the running one ended", released.Sub(at))
	}
	time.Sleep(10 * time.Millisecond)
	if n := l.size(); n != 0 {
		t.Errorf("%d entries left after every call ended", n)
	}
}
