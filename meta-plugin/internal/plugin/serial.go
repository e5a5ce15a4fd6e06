package plugin

import (
	"context"
	"fmt"
	"sync"
)

// containerLocks serializes the calls of one container: CNI promises a plugin no parallel operations on one
// container, and braid's node daemon runs every call in one process, where a runtime's DEL after a timed-out
// ADD would otherwise run beside the ADD (or its rollback) and delete the same attachments twice.
type containerLocks struct {
	mu   sync.Mutex
	byID map[string]*containerLock
}

type containerLock struct {
	held  chan struct{} // one slot: full while a call of the container runs
	users int           // calls holding or waiting for the lock; the entry goes with the last
}

func newContainerLocks() *containerLocks {
	return &containerLocks{byID: map[string]*containerLock{}}
}

// lock waits until no other call of container id runs, for as long as ctx lets it, and returns the unlock.
// The waiting calls of one container get the lock in the order they came.
func (l *containerLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	c, ok := l.byID[id]
	if !ok {
		c = &containerLock{held: make(chan struct{}, 1)}
		l.byID[id] = c
	}
	c.users++
	l.mu.Unlock()
	select {
	case c.held <- struct{}{}:
		return sync.OnceFunc(func() {
			<-c.held
			l.release(id, c)
		}), nil
	case <-ctx.Done():
		l.release(id, c)
		return nil, fmt.Errorf("container %s: another call of the container is still running: %w: %w", id, context.Cause(ctx), errTryAgain)
	}
}

func (l *containerLocks) release(id string, c *containerLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.users--; c.users == 0 {
		delete(l.byID, id)
	}
}

// size is the number of containers with a call running or waiting.
func (l *containerLocks) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}
