package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	gossh "golang.org/x/crypto/ssh"
)

// What the SSH library alone gives: a bare golang.org/x/crypto/ssh server
// — the library the SSH plugin is built on, offering the cipher the
// plugin gives stock OpenSSH by default (aes128-gcm@openssh.com, see the
// plugin's prefer_server_ciphers), and running a program the os/exec way
// (its stdout is the channel) — in a process of its own, serving exec
// requests on TCP. Two informational rows split ssh-throughput-plain in
// two: the library against OpenSSH's sshd, and Alknet (core + plugin)
// against the library. A third, ssh-throughput-ctr, is the plugin without
// server cipher preference: OpenSSH's own order then gives aes128-ctr
// with hmac-sha2-256-etm, as it would for clients without AES-GCM.
var gosshRows = []benchmark{
	{
		Name: "ssh-throughput-gossh", Area: "ssh", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.9, Informational: true,
		Description: "as ssh-throughput-plain with a bare x/crypto/ssh exec server (child process, aes128-gcm as the plugin gives OpenSSH by default) in place of alknet: what the SSH library alone reaches against sshd",
		Rounds:      3, ShortRounds: 3,
		Subject: variant{Label: gosshLabel, Start: sshVariant(startGoSSH, sshBulk)},
		Anchor:  variant{Label: sshdLabel, Start: sshVariant(startSSHD, sshBulk)},
	},
	{
		Name: "ssh-throughput-ctr", Area: "ssh", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.9, Informational: true,
		Description: "as ssh-throughput-plain with the plugin set to prefer_server_ciphers = false, so that OpenSSH's own order gives aes128-ctr + hmac-sha2-256-etm instead of aes128-gcm: what clients without AES-GCM get",
		Rounds:      3, ShortRounds: 3,
		Subject: variant{Label: alknetSSHLabel + ", prefer_server_ciphers = false", Start: sshVariant(func(ctx context.Context) (*sshSide, error) {
			return startAlknetSSHWith(ctx, `prefer_server_ciphers = false`)
		}, sshBulk)},
		Anchor: variant{Label: sshdLabel, Start: sshVariant(startSSHD, sshBulk)},
	},
	{
		Name: "ssh-throughput-vs-gossh", Area: "ssh", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.9, Informational: true,
		Description: "ssh-throughput-plain's alknet side against the bare x/crypto/ssh exec server: what the node and the plugin bridge cost on top of the library",
		Rounds:      3, ShortRounds: 3,
		Subject: variant{Label: alknetSSHLabel, Start: sshVariant(startAlknetSSH, sshBulk)},
		Anchor:  variant{Label: gosshLabel, Start: sshVariant(startGoSSH, sshBulk)},
	},
}

const gosshLabel = "bare golang.org/x/crypto/ssh exec server, child process, TCP 127.0.0.1"

// startGoSSH runs the bare server in a child process (runChild
// "go-ssh") and prepares the ssh client for it.
func startGoSSH(context.Context) (*sshSide, error) {
	client, _, err := sshTools()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-gossh-")
	if err != nil {
		return nil, err
	}
	xdg := filepath.Join(root, "xdg")
	if err := os.MkdirAll(xdg, 0o700); err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	key, err := writeClientKey(filepath.Join(root, "client_ed25519"))
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	addr, stopChild, err := startChild("go-ssh")
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	plain := sshTarget{client: client, env: sshClientEnv(xdg), label: "bare x/crypto/ssh server on " + addr,
		args: append(sshClientOptions(key.file), "-p", port, host)}
	return &sshSide{plain: plain, stop: func() { stopChild(); _ = os.RemoveAll(root) }}, nil
}

type goSSHServer struct {
	ln    net.Listener
	conns sync.WaitGroup
}

// startGoSSHServer listens on loopback TCP with a fresh host key. Any
// client key is accepted: it serves the bench's own client only.
func startGoSSHServer() (*goSSHServer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	cfg := &gossh.ServerConfig{PublicKeyCallback: func(gossh.ConnMetadata, gossh.PublicKey) (*gossh.Permissions, error) { return nil, nil }}
	cfg.Ciphers = []string{gossh.CipherAES128GCM} // what the plugin's defaults give OpenSSH
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &goSSHServer{ln: ln}
	s.conns.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Go(func() { serveGoSSH(nc, cfg) })
		}
	})
	return s, nil
}

func (s *goSSHServer) stop() {
	_ = s.ln.Close()
	s.conns.Wait()
}

// serveGoSSH answers session channels' exec requests until the client
// disconnects.
func serveGoSSH(nc net.Conn, cfg *gossh.ServerConfig) {
	sc, chans, reqs, err := gossh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go gossh.DiscardRequests(reqs) // ends when the connection does
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(gossh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go func() {
			// Owned by the connection: ends with its channel.
			defer ch.Close()
			for r := range creqs {
				if r.Type != "exec" || len(r.Payload) < 4 {
					_ = r.Reply(false, nil)
					continue
				}
				_ = r.Reply(true, nil)
				words := strings.Fields(string(r.Payload[4:]))
				status := uint32(127)
				if len(words) > 0 {
					cmd := exec.Command(words[0], words[1:]...)
					cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
					status = 0
					if err := cmd.Run(); err != nil {
						status = 1
						if ee, ok := err.(*exec.ExitError); ok {
							status = uint32(ee.ExitCode())
						}
					}
				}
				_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
				_ = ch.CloseWrite()
				return
			}
		}()
	}
}
