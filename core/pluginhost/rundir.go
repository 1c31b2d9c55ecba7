package pluginhost

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The plugin socket directory, <data>/plugins/run (docs/spec/plugins.md
// §9): go-plugin makes one directory per plugin process in it, holding the
// plugin's socket and the core's socket for the Host service.

// privateSocketDir refuses a socket directory another local user could
// reach: without AutoMTLS (plugins.mtls = false) it is the only thing
// between that user and the plugin sockets.
func privateSocketDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("plugin socket directory: %w", err)
	}
	var problems, fixes []string
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		problems = append(problems, fmt.Sprintf("has mode %04o", perm))
		fixes = append(fixes, "chmod 700 "+dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		problems = append(problems, "is owned by "+userName(int(sys.Uid)))
		fixes = append(fixes, "chown "+userName(os.Geteuid())+" "+dir)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("plugins.mtls = false and the plugin socket directory %s %s: another local user could reach the plugin sockets, which nothing else protects without AutoMTLS; fix it with: %s (or set plugins.mtls = true)",
		dir, strings.Join(problems, " and "), strings.Join(fixes, " && "))
}

// userName is the name of uid, or the number if it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// clearSocketDir removes everything in dir: sockets and per-plugin
// directories a node that did not stop cleanly left behind. It returns
// what it removed.
func clearSocketDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if os.RemoveAll(p) == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

// lookupRunAs resolves plugins.user; nil when it is the node's own user.
func lookupRunAs(name string) (*RunAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, numErr := strconv.Atoi(name); numErr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("plugins.user = %q: no such local user; create it (e.g. useradd --system --no-create-home %s) or change plugins.user", name, name)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("plugins.user = %q: user ids %s:%s are not numbers", name, u.Uid, u.Gid)
	}
	if euid := os.Geteuid(); uid == euid {
		return nil, nil
	} else if euid != 0 {
		return nil, fmt.Errorf("plugins.user = %q: running plugins as another user needs the node to run as root (it runs as %s); start alknet as root or remove plugins.user", name, userName(euid))
	}
	return &RunAs{Name: u.Username, UID: uid, GID: gid}, nil
}
