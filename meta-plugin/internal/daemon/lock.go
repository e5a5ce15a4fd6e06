package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockStateDir makes this daemon the only one using dir: a daemon made while the previous one still drains
// (its pod terminating) waits, for as long as ctx lets it, until that one has exited, so that the two never
// write, land or drop one queued write each. The lock is an flock on dir+".lock", released by the kernel when
// its process dies; the unlock returned releases it.
func lockStateDir(ctx context.Context, dir string, log *slog.Logger) (func(), error) {
	f, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("status queue lock: %w", err)
	}
	for logged := false; ; logged = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("status queue lock: %w", err)
		}
		if !logged {
			log.Info("waiting for the previous daemon to exit", "lock", f.Name())
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		}
	}
}
