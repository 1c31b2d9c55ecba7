package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/proto/pluginpb"
)

// instance is one running plugin process.
type instance struct {
	name, version string
	manifest      *Manifest
	protocol      int
	client        *plugin.Client
	pc            *sdk.Client
	log           hclog.Logger

	ctx    context.Context // done when the process is gone or stopped
	cancel context.CancelFunc
	exited chan struct{}

	nextID  atomic.Uint64
	conns   sync.Map // uint64 → *bridgedConn
	streams sync.Map // streamKey → endpoint.Stream waiting for Host.Stream
	active  atomic.Int64
	calls   sync.Map // request id → *inflight
	mux     *callMux
	hostSrv *grpc.Server
	pid     int
}

type streamKey struct{ conn, stream uint64 }

// bridgedConn is a connection the core routed to the plugin.
type bridgedConn struct {
	conn   endpoint.Conn
	drain  context.Context
	done   chan struct{}
	once   sync.Once
	code   uint64
	reason string
}

func (b *bridgedConn) finish(code uint64, reason string) {
	b.once.Do(func() { b.code, b.reason = code, reason; close(b.done) })
}

// inflight is an operation call being served by the plugin.
type inflight struct {
	env []string
}

// launchOptions configure one launch.
type launchOptions struct {
	binary string
	sha256 string
	mtls   bool
	// socketDir holds the plugin sockets: private (0700), so that without
	// AutoMTLS no other local user can reach them.
	socketDir string
	log       hclog.Logger
	host      func(*instance) pluginpb.HostServer
	settings  json.RawMessage
	nodeInfo  json.RawMessage
}

// launch verifies the binary, starts it with go-plugin and configures it.
func launch(ctx context.Context, o launchOptions) (*instance, error) {
	// Integrity before execution (D7): hash it ourselves so the error can
	// name both digests; go-plugin's SecureConfig checks again at exec.
	got, err := FileSHA256(o.binary)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", o.binary, err)
	}
	if got != o.sha256 {
		return nil, &VerifyError{Path: o.binary, Want: o.sha256, Got: got}
	}
	want, _ := hex.DecodeString(o.sha256)
	if err := ensureDir(o.socketDir); err != nil {
		return nil, fmt.Errorf("plugin socket directory: %w", err)
	}
	cmd := exec.Command(o.binary)
	cmd.Env = minimalEnv()
	// Own process group (stopping kills the group) and a parent-death
	// signal, so a crashed core leaves no plugin behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: sdk.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginpb.ProtocolVersion: {pluginpb.PluginName: &sdk.GRPCPlugin{}},
		},
		Cmd:              cmd,
		SecureConfig:     &plugin.SecureConfig{Checksum: want, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         o.mtls,
		SkipHostEnv:      true,
		Logger:           o.log,
		GRPCDialOptions:  sdk.DialOptions(),
		StartTimeout:     10 * time.Second,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: o.socketDir},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start %s: %w", o.binary, err)
	}
	raw, err := rpc.Dispense(pluginpb.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start %s: %w", o.binary, err)
	}
	pc := raw.(*sdk.Client)
	ictx, cancel := context.WithCancel(context.Background())
	in := &instance{client: client, pc: pc, log: o.log, ctx: ictx, cancel: cancel, exited: make(chan struct{}), protocol: client.NegotiatedVersion()}
	if rc := client.ReattachConfig(); rc != nil {
		in.pid = rc.Pid
	}
	fail := func(err error) (*instance, error) {
		in.stop(0)
		return nil, err
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	mf, err := pc.Describe(dctx, &pluginpb.Empty{})
	if err != nil {
		return fail(fmt.Errorf("describe: %w", err))
	}
	m, err := ParseManifest(mf.GetJson())
	if err != nil {
		return fail(err)
	}
	in.manifest, in.name, in.version = m, m.Name, m.Version
	// The Host service, on one brokered connection the plugin dials once.
	id := pc.Broker.NextId()
	hostImpl := o.host(in)
	go pc.Broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, sdk.ServerOptions()...)...)
		pluginpb.RegisterHostServer(s, hostImpl)
		return s
	})
	if _, err := pc.Configure(dctx, &pluginpb.ConfigureRequest{Settings: o.settings, NodeInfo: o.nodeInfo, HostBrokerId: id}); err != nil {
		return fail(fmt.Errorf("configure: %w", err))
	}
	if in.mux, err = newCallMux(ictx, pc); err != nil {
		return fail(fmt.Errorf("open the call stream: %w", err))
	}
	go in.watch()
	return in, nil
}

// watch notices the process exit. Owned by the instance.
// Health checking: a plugin that stops answering Health (hung, not
// crashed) is treated like one that exited.
const (
	healthEvery    = 5 * time.Second
	healthTimeout  = 3 * time.Second
	healthFailures = 3
)

func (in *instance) watch() {
	defer close(in.exited)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	h := time.NewTicker(healthEvery)
	defer h.Stop()
	failures := 0
	for {
		select {
		case <-t.C:
			if in.client.Exited() {
				in.cancel()
				return
			}
		case <-h.C:
			ctx, cancel := context.WithTimeout(in.ctx, healthTimeout)
			_, err := in.pc.Health(ctx, &pluginpb.Empty{})
			cancel()
			if err == nil {
				failures = 0
				continue
			}
			if in.ctx.Err() != nil {
				return
			}
			failures++
			in.log.Warn("plugin health check failed", "failures", failures, "error", err)
			if failures >= healthFailures {
				in.log.Error("plugin does not answer health checks; stopping it", "pid", in.pid)
				if in.pid > 0 {
					_ = syscall.Kill(-in.pid, syscall.SIGKILL)
				}
				in.cancel()
				return
			}
		case <-in.ctx.Done():
			return
		}
	}
}

// stop ends the process: graceful first, then the whole process group.
func (in *instance) stop(grace time.Duration) {
	in.cancel()
	done := make(chan struct{})
	go func() { in.client.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace + 2*time.Second):
	}
	if in.pid > 0 {
		_ = syscall.Kill(-in.pid, syscall.SIGKILL)
	}
	<-done
}

// closeAll closes every connection routed to this instance with code 2.
func (in *instance) closeAll(reason string) {
	in.conns.Range(func(k, v any) bool {
		bc := v.(*bridgedConn)
		_ = bc.conn.CloseWithError(endpoint.CodeUnavailable, reason)
		bc.finish(uint64(endpoint.CodeUnavailable), reason)
		return true
	})
}

// Pid is the plugin process id.
func (in *instance) Pid() int { return in.pid }

var errUnavailable = errors.New("plugin unavailable")
