package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

// sshALPN is the SSH plugin's protocol.
const sshALPN = "alknet/ssh"

func (a *app) sshConfigCmd() *cobra.Command {
	var f dialFlags
	var name, user string
	c := &cobra.Command{
		Use:   "ssh-config HOST[:PORT] [--name ALIAS] [--user USER]",
		Short: "Print a ~/.ssh/config Host block that reaches a node's SSH plugin",
		Long: `Print an OpenSSH Host block for a node: ProxyCommand runs 'alknet pipe' with the
node's pinned identity, and the node's SSH host key — read from the node over
that pinned connection — is written to <data-dir>/ssh_known_hosts, which the
block uses with strict checking. Append the output to ~/.ssh/config, then
'ssh ALIAS' works.`,
		Example: "  alknet ssh-config --peer ed25519:… --name mynode --user ops node.example:4433 >> ~/.ssh/config",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			addr, err := dial.NormalizeAddr(args[0])
			if err != nil {
				return err
			}
			host, port, _ := net.SplitHostPort(addr)
			if name == "" {
				name = host
			}
			o, err := a.dialOptions(&f, sshALPN)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			conn, err := dial.Dial(ctx, addr, o)
			if err != nil {
				return err
			}
			key, err := sshHostKey(ctx, conn, addr)
			_ = conn.CloseWithError(0, "")
			if err != nil {
				return err
			}
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			if err := d.Ensure(); err != nil {
				return err
			}
			kh := filepath.Join(d.Path, "ssh_known_hosts")
			if err := setKnownHost(kh, name, key); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				exe = "alknet"
			}
			proxy := fmt.Sprintf("%s --data-dir %s pipe --alpn %s --peer %s", exe, d.Path, sshALPN, f.o.Peer)
			if f.o.Peer == "" {
				proxy = fmt.Sprintf("%s --data-dir %s pipe --alpn %s", exe, d.Path, sshALPN)
			}
			if f.o.TCP {
				proxy += " --tcp"
			}
			if f.o.QUIC {
				proxy += " --quic"
			}
			fmt.Fprintf(a.out, "Host %s\n    HostName %s\n    Port %s\n", name, host, port)
			if user != "" {
				fmt.Fprintf(a.out, "    User %s\n", user)
			}
			// "%h %p" as two words, not "%h:%p": OpenSSH substitutes a
			// bare IPv6 address for %h, which "host:port" cannot carry.
			fmt.Fprintf(a.out, "    ProxyCommand %s %%h %%p\n    HostKeyAlias %s\n    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n", proxy, name, kh)
			fmt.Fprintf(a.err, "recorded %s's SSH host key %s in %s\n", name, gossh.FingerprintSHA256(key), kh)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "Host alias (default: the host)")
	c.Flags().StringVar(&user, "user", "", "remote user name to put in the block")
	f.add(c)
	return c
}

// streamConn adapts an endpoint stream to net.Conn for x/crypto/ssh.
type streamConn struct {
	endpoint.Stream
	local, remote net.Addr
}

func (s streamConn) LocalAddr() net.Addr  { return s.local }
func (s streamConn) RemoteAddr() net.Addr { return s.remote }

var errGotKey = errors.New("host key captured")

// sshHostKey runs an SSH key exchange over a fresh stream of conn (whose
// TLS identity is already pinned) and returns the server's host key.
func sshHostKey(ctx context.Context, conn endpoint.Conn, addr string) (gossh.PublicKey, error) {
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open SSH stream: %w", err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(15 * time.Second))
	var key gossh.PublicKey
	cfg := &gossh.ClientConfig{
		User: "alknet-ssh-config",
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error {
			key = k
			return errGotKey // stop after the key exchange: nothing to log in as
		},
		Timeout: 15 * time.Second,
	}
	_, _, _, err = gossh.NewClientConn(streamConn{Stream: st, local: conn.LocalAddr(), remote: conn.RemoteAddr()}, addr, cfg)
	if key == nil {
		return nil, fmt.Errorf("read the SSH host key of %s (is the SSH plugin installed?): %w", addr, err)
	}
	return key, nil
}

// setKnownHost writes "alias key" into a known_hosts file, replacing any
// previous line for alias. It holds the file's lock (atomicfile.Lock) from
// the read to the write, so concurrent runs keep each other's lines.
func setKnownHost(path, alias string, key gossh.PublicKey) error {
	unlock, err := atomicfile.Lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	var lines []string
	if b, err := os.ReadFile(path); err == nil {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			if f := strings.Fields(l); l != "" && (len(f) == 0 || f[0] != alias) {
				lines = append(lines, l)
			}
		}
	}
	lines = append(lines, alias+" "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(key))))
	return atomicfile.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"))
}
