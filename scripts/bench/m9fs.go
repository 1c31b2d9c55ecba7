package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/plugins/fs/bao"
)

// fs: node-to-node transfer of one blob, and BLAKE3 hashing.
//
// fs-node-to-node: `alknet fs get --from A` (a process of its own, as a
// user runs it) fetches a blob from node A's fs plugin into a file, every
// 16 KiB group verified against the blob's BLAKE3 root as it arrives;
// the anchor is a bare quic-go stream carrying the same bytes from a child
// process into a file in this process — two processes, one stream, no
// verification. blake3-hash: plugins/fs/bao.OutboardWriter
// (as the fs plugin hashes a put, outboard included) against Debian's
// b3sum on one thread.
var m9fs = []benchmark{
	{
		Name: "fs-node-to-node", Area: "fs", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.8,
		Description: "`alknet fs get --from A` of a 1 GiB blob (256 MiB with -short) into a file, each 16 KiB group verified, wall time of the process: node A's fs plugin vs a bare quic-go stream carrying the same bytes from a child process into a file",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: "bin/alknet serve + fs plugin (node A); bin/alknet fs get in a process of its own", Start: startFSGet},
		Anchor:  variant{Label: "bare quic-go: a child process sends the file on one stream, this process writes it to a file", Start: startChildBlob},
	},
	{
		Name: "blake3-hash", Area: "fs", Unit: "MiB/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: "BLAKE3-256 of a 1 GiB file (256 MiB with -short), one core: the fs plugin's hashing of a put (bao.OutboardWriter: the root and the 16 KiB-group outboard) reading the file in this process vs `b3sum --num-threads 1 --no-names`",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: "plugins/fs/bao.OutboardWriter, file read in 1 MiB blocks", Start: startHashGo},
		Anchor:  variant{Label: "b3sum --num-threads 1 (Debian b3sum)", Start: startB3sum},
	},
}

func fsSize(short bool) int64 {
	if short {
		return 256 << 20
	}
	return 1 << 30
}

// fsLocal is the blob both fs rows use: pseudo-random bytes, written once.
var fsLocal struct {
	once sync.Once
	dir  string
	err  error
}

func fsSource(short bool) (string, error) {
	fsLocal.once.Do(func() {
		fsLocal.dir, fsLocal.err = os.MkdirTemp("", "alknet-bench-fs-")
		if fsLocal.err != nil {
			return
		}
		f, err := os.Create(filepath.Join(fsLocal.dir, "blob.bin"))
		if err != nil {
			fsLocal.err = err
			return
		}
		defer f.Close()
		_, fsLocal.err = io.CopyN(f, mrand.NewChaCha8([32]byte{7}), fsSize(short))
	})
	return filepath.Join(fsLocal.dir, "blob.bin"), fsLocal.err
}

// removeFSSource removes the fs rows' files at the end of a run.
func removeFSSource() {
	if fsLocal.dir != "" {
		_ = os.RemoveAll(fsLocal.dir)
	}
}

// startFSGet starts node A with the fs plugin alone, puts the blob on it
// from a client whose vault identity has fs:read and fs:write, and
// measures `alknet fs get` by that client.
func startFSGet(ctx context.Context, e *env) (*instance, error) {
	src, err := fsSource(e.short)
	if err != nil {
		return nil, err
	}
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	others, err := otherPlugins()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-fsnode-")
	if err != nil {
		return nil, err
	}
	h := &nodeHome{root: root}
	fail := func(err error) (*instance, error) {
		h.remove()
		return nil, err
	}
	client := filepath.Join(root, "client")
	xdg := filepath.Join(root, "xdg")
	if err := os.MkdirAll(xdg, 0o700); err != nil {
		return fail(err)
	}
	cl := benchClient{bin: bin, dataDir: client, xdg: xdg}
	run := func(args ...string) ([]byte, error) { return cl.run(ctx, 5*time.Minute, args...) }
	fp, err := cl.identity(ctx)
	if err != nil {
		return fail(err)
	}
	config := fmt.Sprintf("[[auth.peers]]\npeer_id = \"bench-admin\"\nfingerprints = [%q]\nscopes = [\"admin\"]\n\n"+
		"[[auth.peers]]\npeer_id = \"bench-fs\"\nfingerprints = [%q]\nscopes = [\"fs:read\", \"fs:write\"]\n", benchKey().fp, fp)
	config += disabledExcept(others, "fs")
	if err := os.WriteFile(h.configFile(), []byte(config), 0o600); err != nil {
		return fail(err)
	}
	p, err := h.serve(ctx)
	if err != nil {
		return fail(err)
	}
	n := &node{home: h, proc: p, fp: p.fp, addr: p.addr}
	if err := pluginsReady(ctx, n, "fs"); err != nil {
		n.close()
		return nil, fmt.Errorf("%w\n%s", err, p.logs)
	}
	out, err := run("fs", "put", "--peer", n.fp, n.addr, src, "--json")
	var put struct {
		Hash string `json:"hash"`
	}
	if err == nil {
		err = json.Unmarshal(out, &put)
	}
	if err != nil || put.Hash == "" {
		n.close()
		return nil, fmt.Errorf("fs put: %q: %v", out, err)
	}
	dst := filepath.Join(root, "got.bin")
	size := fsSize(e.short)
	get := func(ctx context.Context) (float64, error) {
		_ = os.Remove(dst)
		start := time.Now()
		if _, err := run("fs", "get", put.Hash, "--from", n.fp+"@"+n.addr, "-o", dst, "--force"); err != nil {
			return 0, err
		}
		d := time.Since(start)
		if st, err := os.Stat(dst); err != nil || st.Size() != size {
			return 0, fmt.Errorf("fs get wrote %v (%v), want %d bytes", st, err, size)
		}
		return float64(size) / d.Seconds() / (1 << 20), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := get(ctx); return err },
		Measure: get,
		Stop:    n.close,
	}, nil
}

// blobALPN is the anchor's protocol: the child sends the file on every
// stream the client opens (after the client's one byte).
const blobALPN = "alknet-bench/blob"

// startChildBlob runs a child process serving the blob over bare quic-go
// and measures receiving it into a file.
func startChildBlob(ctx context.Context, e *env) (*instance, error) {
	src, err := fsSource(e.short)
	if err != nil {
		return nil, err
	}
	addr, stop, err := startChild("quic-blob:" + src)
	if err != nil {
		return nil, err
	}
	size := fsSize(e.short)
	dst := filepath.Join(fsLocal.dir, "anchor-got.bin")
	cfg := e.clientTLS()
	cfg.NextProtos = []string{blobALPN}
	get := func(ctx context.Context) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		start := time.Now()
		c, err := quic.DialAddr(ctx, addr, cfg, nil) // quic-go's defaults, as the node and alknet's dialer use
		if err != nil {
			return 0, err
		}
		defer c.CloseWithError(0, "")
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			return 0, err
		}
		if _, err := s.Write([]byte{1}); err != nil {
			return 0, err
		}
		_ = s.Close()
		f, err := os.Create(dst)
		if err != nil {
			return 0, err
		}
		n, err := io.CopyBuffer(f, s, make([]byte, 1<<20))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		_ = os.Remove(dst)
		if err != nil || n != size {
			return 0, fmt.Errorf("bare quic-go blob: %d of %d bytes: %v", n, size, err)
		}
		return float64(size) / time.Since(start).Seconds() / (1 << 20), nil
	}
	return &instance{Warmup: func(ctx context.Context) error { _, err := get(ctx); return err }, Measure: get, Stop: stop}, nil
}

// runBlobChild is the child side of startChildBlob: it serves file on
// every stream until stdin closes.
func runBlobChild(file string) (addr string, stop func(), err error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	cert, err := identity.RawKeyTLSCertificate(key)
	if err != nil {
		return "", nil, err
	}
	cfg := (&env{cert: cert}).serverTLS()
	cfg.NextProtos = []string{blobALPN}
	ln, err := quic.ListenAddr("127.0.0.1:0", cfg, &quic.Config{MaxIncomingStreams: 16})
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned by stop: ends when the listener closes
		defer wg.Done()
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { // owned by the accept loop's group
				defer wg.Done()
				s, err := c.AcceptStream(context.Background())
				if err != nil {
					return
				}
				var one [1]byte
				if _, err := io.ReadFull(s, one[:]); err != nil {
					return
				}
				f, err := os.Open(file)
				if err != nil {
					s.CancelWrite(1)
					return
				}
				defer f.Close()
				_, _ = io.CopyBuffer(s, f, make([]byte, 1<<20))
				_ = s.Close()
				<-c.Context().Done()
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close(); wg.Wait() }, nil
}

func startHashGo(_ context.Context, e *env) (*instance, error) {
	src, err := fsSource(e.short)
	if err != nil {
		return nil, err
	}
	size := fsSize(e.short)
	hash := func(context.Context) (float64, error) {
		f, err := os.Open(src)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		start := time.Now()
		w := bao.NewOutboardWriter()
		if _, err := io.CopyBuffer(w, f, make([]byte, 1<<20)); err != nil {
			return 0, err
		}
		w.Sum()
		return float64(size) / time.Since(start).Seconds() / (1 << 20), nil
	}
	return &instance{Warmup: func(ctx context.Context) error { _, err := hash(ctx); return err }, Measure: hash, Stop: func() {}}, nil
}

func startB3sum(_ context.Context, e *env) (*instance, error) {
	src, err := fsSource(e.short)
	if err != nil {
		return nil, err
	}
	b3, err := exec.LookPath("b3sum")
	if err != nil {
		return nil, errors.New("install b3sum (apt-get install -y b3sum) for the blake3-hash anchor")
	}
	size := fsSize(e.short)
	hash := func(ctx context.Context) (float64, error) {
		start := time.Now()
		cmd := exec.CommandContext(ctx, b3, "--num-threads", "1", "--no-names", src)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("b3sum: %v: %s", err, out)
		}
		return float64(size) / time.Since(start).Seconds() / (1 << 20), nil
	}
	return &instance{Warmup: func(ctx context.Context) error { _, err := hash(ctx); return err }, Measure: hash, Stop: func() {}}, nil
}

// benchClient is a machine of its own for the bench: a data directory with
// a vault, whose identity the nodes of a row list as a peer.
type benchClient struct {
	bin, dataDir, xdg string
}

// run runs alknet on the client's data directory and returns its stdout.
func (c benchClient) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	return c.runInput(ctx, timeout, nil, args...)
}

// runInput is run with input on alknet's stdin (nil: none).
func (c benchClient) runInput(ctx context.Context, timeout time.Duration, input []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--data-dir", c.dataDir}, args...)...)
	cmd.Env = nodeEnv(c.xdg)
	if input != nil {
		cmd.Stdin = bytes.NewReader(input)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("alknet %s: %v\n%s", strings.Join(args, " "), err, indent(stderr.String()))
	}
	return out, nil
}

// identity creates the client's vault and returns its fingerprint.
func (c benchClient) identity(ctx context.Context) (string, error) {
	if _, err := c.run(ctx, time.Minute, "init", "--show-mnemonic-once"); err != nil {
		return "", err
	}
	out, err := c.run(ctx, time.Minute, "id", "--json")
	if err != nil {
		return "", err
	}
	var id struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal(out, &id); err != nil || id.Fingerprint == "" {
		return "", fmt.Errorf("alknet id --json: %q: %v", out, err)
	}
	return id.Fingerprint, nil
}
