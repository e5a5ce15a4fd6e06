package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// apiBinary is braid-ipam's part that reads the API server; daemonAskedFlag, its argument, tells it that
// braid's node daemon was asked already (plugin.Plugin.DaemonAsked).
const (
	apiBinary       = "braid-ipam-api"
	daemonAskedFlag = "-daemon-asked"
)

// becomeAPI replaces this process with braid-ipam-api for the same call: the same environment (CNI_COMMAND,
// CNI_ARGS, ...), the same stdin (read already, so handed over in a memory file) and the same stdout, so
// the runtime sees one plugin's answer and exit status. It returns only when that cannot be done.
func becomeAPI(args *skel.CmdArgs) error {
	return become(args, nil)
}

// becomeAPIDaemonAsked is becomeAPI for an ADD that braid's node daemon could not answer.
func becomeAPIDaemonAsked(args *skel.CmdArgs) error {
	return become(args, []string{daemonAskedFlag})
}

func become(args *skel.CmdArgs, flags []string) error {
	path, err := findAPI()
	if err != nil {
		return err
	}
	if err := stdinFromMemory(args.StdinData); err != nil {
		return types.NewError(types.ErrInternal, "braid-ipam: hand the call over to "+apiBinary, err.Error())
	}
	err = syscall.Exec(path, append([]string{path}, flags...), os.Environ())
	return types.NewError(types.ErrInternal, "braid-ipam: run "+path, err.Error())
}

// stdinFromMemory makes fd 0 an anonymous memory file holding data, at its start, that an exec'd image reads
// as its stdin (a pipe would hold only 64 KiB before a reader must drain it).
func stdinFromMemory(data []byte) error {
	fd, err := unix.MemfdCreate("braid-ipam-stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "braid-ipam-stdin")
	defer func() { _ = f.Close() }() // fd 0 stays: Dup3 gave it its own descriptor, without close-on-exec
	if _, err := f.Write(data); err != nil {
		return err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	return unix.Dup3(fd, 0, 0)
}

// findAPI looks for braid-ipam-api beside this binary, where braid's installer puts it, then in CNI_PATH.
func findAPI() (string, error) {
	var dirs []string
	if self, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(self))
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("CNI_PATH"))...)
	for _, dir := range dirs {
		path := filepath.Join(dir, apiBinary)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", types.NewError(types.ErrTryAgainLater, fmt.Sprintf("braid-ipam: %s is not beside braid-ipam nor in CNI_PATH (looked in %v); "+
		"braid-ipam hands it the calls that read the API server (CHECK, STATUS, and an ADD that braid's node daemon does not answer): "+
		"install it beside braid-ipam (braid's installer copies both), or, for ADD, run braid's node daemon", apiBinary, dirs), "")
}
