//go:build !linux

package hostevent

import "errors"

// Listener is not available without Linux netlink.
type Listener struct{}

// Listen fails: kernel notifications are a Linux feature.
func Listen() (*Listener, error) {
	return nil, errors.New("kernel device notifications need linux netlink")
}

// Events never delivers.
func (l *Listener) Events() <-chan struct{} { return nil }

// Close does nothing.
func (l *Listener) Close() error { return nil }
