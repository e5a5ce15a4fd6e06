package hostevent

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Listener turns netlink notifications of the network namespace it was opened in into wake-ups.
type Listener struct {
	events chan struct{}
	files  []*os.File
	wg     sync.WaitGroup
}

// Listen subscribes to rtnetlink link notifications and kernel uevents. The device plugin runs in the host's
// network namespace, where both describe the host's NICs.
func Listen() (*Listener, error) {
	l := &Listener{events: make(chan struct{}, 1)}
	link, err := open(unix.NETLINK_ROUTE, unix.RTMGRP_LINK, "rtnetlink")
	if err != nil {
		return nil, err
	}
	uevent, err := open(unix.NETLINK_KOBJECT_UEVENT, 1, "uevent")
	if err != nil {
		_ = link.Close()
		return nil, err
	}
	l.files = []*os.File{link, uevent}
	l.wg.Add(2)
	go l.read(link, func([]byte) bool { return true })
	go l.read(uevent, ueventWakes)
	return l, nil
}

// Events delivers one wake-up per burst of notifications: it holds at most one pending.
func (l *Listener) Events() <-chan struct{} { return l.events }

// Close stops listening.
func (l *Listener) Close() error {
	var errs []error
	for _, f := range l.files {
		errs = append(errs, f.Close())
	}
	l.wg.Wait()
	return errors.Join(errs...)
}

// open binds a non-blocking netlink socket to groups, wrapped in an *os.File so that reads go through the
// runtime poller and Close interrupts them.
func open(protocol, groups int, name string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, protocol)
	if err != nil {
		return nil, fmt.Errorf("%s socket: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: uint32(groups)}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s bind: %w", name, err)
	}
	// A burst (hundreds of VFs appearing) may overflow the socket buffer; an overflow is still a wake-up.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	return os.NewFile(uintptr(fd), name), nil
}

func (l *Listener) read(f *os.File, wakes func([]byte) bool) {
	defer l.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		switch {
		case errors.Is(err, unix.ENOBUFS):
			l.wake() // notifications were lost: rescan anyway
			continue
		case err != nil:
			return // closed
		}
		if wakes(buf[:n]) {
			l.wake()
		}
	}
}

func (l *Listener) wake() {
	select {
	case l.events <- struct{}{}:
	default:
	}
}
