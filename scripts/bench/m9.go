package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SFTP: stock OpenSSH `sftp` moving one file of sftpSize bytes, against
// the node (SSH plugin on a [[listeners.plain]] TCP port, its sftp
// subsystem bridged to the SFTP plugin) and against OpenSSH's sshd with
// its own sftp-server, started as in m5.go with the same client options.
// The figure is the file's size over the wall time of the sftp process
// (connection, authentication and the transfer: the same on both sides).
// The -pipe rows reach the node through `alknet pipe` as ProxyCommand.
var m9 = []benchmark{
	{
		Name: "sftp-get", Area: "sftp", Unit: "MiB/s", HigherIsBetter: true, Goal: 1.0,
		Description: "stock sftp `get` of a 512 MiB file (64 MiB with -short), wall time of the sftp process: the SSH plugin's sftp subsystem → the SFTP plugin, on a [[listeners.plain]] TCP port, vs sshd with OpenSSH's sftp-server",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: alknetSFTPLabel, Start: sshVariant(startAlknetSFTP, sftpGet)},
		Anchor:  variant{Label: sshdSFTPLabel, Start: sshVariant(startSSHD, sftpGet)},
		Also: []companion{
			{Name: "sftp-get-pipe", Unit: "MiB/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
				Description: "as sftp-get through `alknet pipe` as ProxyCommand (QUIC) vs the same sshd on TCP"},
		},
	},
	{
		Name: "sftp-put", Area: "sftp", Unit: "MiB/s", HigherIsBetter: true, Goal: 1.0,
		Description: "stock sftp `put` of a 512 MiB file (64 MiB with -short), as sftp-get",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: alknetSFTPLabel, Start: sshVariant(startAlknetSFTP, sftpPut)},
		Anchor:  variant{Label: sshdSFTPLabel, Start: sshVariant(startSSHD, sftpPut)},
		Also: []companion{
			{Name: "sftp-put-pipe", Unit: "MiB/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
				Description: "as sftp-put through `alknet pipe` as ProxyCommand (QUIC) vs the same sshd on TCP"},
		},
	},
}

const (
	alknetSFTPLabel = "bin/alknet serve + ssh and sftp plugins: [[listeners.plain]] port (-pipe rows: ProxyCommand alknet pipe, QUIC)"
	sshdSFTPLabel   = "OpenSSH /usr/sbin/sshd -D -e with /usr/lib/openssh/sftp-server, 127.0.0.1"
	sftpFileName    = "alknet-bench-sftp.bin"
)

func sftpSize(short bool) int64 {
	if short {
		return 64 << 20
	}
	return 512 << 20
}

// startAlknetSFTP is startAlknetSSH with the SFTP plugin enabled and the
// bench key allowed the sftp subsystem, reading and writing.
func startAlknetSFTP(ctx context.Context) (*sshSide, error) {
	return startAlknetSSHNode(ctx, "", []string{"sftp"}, []string{"ssh:sftp", "sftp:read", "sftp:write"})
}

// sftpLocal is the local file both sides send and receive: pseudo-random
// bytes (nothing on the way compresses), written once per run.
var sftpLocal struct {
	once sync.Once
	dir  string
	err  error
}

func sftpSource(short bool) (string, error) {
	sftpLocal.once.Do(func() {
		sftpLocal.dir, sftpLocal.err = os.MkdirTemp("", "alknet-bench-sftp-")
		if sftpLocal.err != nil {
			return
		}
		f, err := os.Create(filepath.Join(sftpLocal.dir, "source.bin"))
		if err != nil {
			sftpLocal.err = err
			return
		}
		defer f.Close()
		_, sftpLocal.err = io.CopyN(f, rand.NewChaCha8([32]byte{9}), sftpSize(short))
	})
	return filepath.Join(sftpLocal.dir, "source.bin"), sftpLocal.err
}

// removeSFTPSource removes the sftp rows' local files at the end of a run.
func removeSFTPSource() {
	if sftpLocal.dir != "" {
		_ = os.RemoveAll(sftpLocal.dir)
	}
}

func sftpGet(ctx context.Context, e *env, t sshTarget, warmup bool) (float64, error) {
	src, err := sftpSource(e.short)
	if err != nil {
		return 0, err
	}
	remote := path.Join(t.sftpDir, sftpFileName)
	if warmup { // the file to get
		_, err := sftpRun(ctx, t, fmt.Sprintf("put %s %s\n", shellQuote(src), shellQuote(remote)))
		return 0, err
	}
	dst := filepath.Join(sftpLocal.dir, "got.bin")
	defer os.Remove(dst)
	d, err := sftpRun(ctx, t, fmt.Sprintf("get %s %s\n", shellQuote(remote), shellQuote(dst)))
	if err != nil {
		return 0, err
	}
	if st, err := os.Stat(dst); err != nil || st.Size() != sftpSize(e.short) {
		return 0, fmt.Errorf("%s: get wrote %v (%v), want %d bytes", t.label, st, err, sftpSize(e.short))
	}
	return float64(sftpSize(e.short)) / d.Seconds() / (1 << 20), nil
}

func sftpPut(ctx context.Context, e *env, t sshTarget, warmup bool) (float64, error) {
	src, err := sftpSource(e.short)
	if err != nil {
		return 0, err
	}
	remote := path.Join(t.sftpDir, sftpFileName)
	d, err := sftpRun(ctx, t, fmt.Sprintf("put %s %s\nrm %s\n", shellQuote(src), shellQuote(remote), shellQuote(remote)))
	if err != nil || warmup {
		return 0, err
	}
	return float64(sftpSize(e.short)) / d.Seconds() / (1 << 20), nil
}

// sftpRun runs a batch of sftp commands against t's server and returns the
// sftp process's wall time. The ssh options are t's, with sftp's -P for
// ssh's -p.
func sftpRun(ctx context.Context, t sshTarget, batch string) (time.Duration, error) {
	client, err := exec.LookPath("sftp")
	if err != nil {
		return 0, fmt.Errorf("%v: install openssh-client for the sftp rows", err)
	}
	args := slices.Clone(t.args)
	for i, a := range args {
		if a == "-p" {
			args[i] = "-P"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, append([]string{"-b", "-"}, args...)...)
	cmd.Env = t.env
	cmd.Stdin = strings.NewReader(batch)
	out := &logTail{}
	cmd.Stdout = &lineWriter{tail: out}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: sftp %q: %w\n%s", t.label, strings.TrimSpace(batch), err, out)
	}
	return time.Since(start), nil
}
