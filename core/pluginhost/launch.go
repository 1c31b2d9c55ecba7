package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// Process is a started plugin as the supervisor sees it: the Plugin
// service, a way to serve the Host service to it, and its life.
type Process interface {
	// Plugin is the plugin's Plugin service.
	Plugin() pluginpb.PluginClient
	// ServeHost serves srv where the plugin can reach it and returns the id
	// to announce in ConfigureRequest.host_broker_id.
	ServeHost(srv pluginpb.HostServer) (uint32, error)
	// Exited is closed once the process is gone.
	Exited() <-chan struct{}
	// Pid is the process id (0 if there is none).
	Pid() int
	// Protocol is the negotiated protocol version.
	Protocol() int
	// Stop ends the process: gracefully for up to grace, then by force.
	Stop(grace time.Duration)
}

// LaunchSpec is what a Launcher starts.
type LaunchSpec struct {
	Name, Version string
	// Binary is the installed executable and SHA256 its lock-file digest.
	Binary, SHA256 string
	// MTLS turns on go-plugin's AutoMTLS.
	MTLS bool
	// SocketDir is the private directory for the plugin's sockets.
	SocketDir string
	Log       hclog.Logger
}

// Launcher starts plugin processes. ProcessLauncher is the production one;
// InProcess serves a plugin inside the current process (tests).
type Launcher interface {
	Launch(ctx context.Context, spec LaunchSpec) (Process, error)
}

// ProcessLauncher launches installed plugin binaries with go-plugin
// (docs/spec/plugins.md §2): verified first, no inherited environment, own
// process group, parent-death signal.
type ProcessLauncher struct{}

// Launch verifies the binary against its digest and starts it.
func (ProcessLauncher) Launch(_ context.Context, o LaunchSpec) (Process, error) {
	// Integrity before execution (docs/architecture.md D7): hash it here so
	// the error can name both digests; go-plugin's SecureConfig checks
	// again at exec.
	got, err := FileSHA256(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", o.Binary, err)
	}
	if got != o.SHA256 {
		return nil, &VerifyError{Path: o.Binary, Want: o.SHA256, Got: got}
	}
	want, _ := hex.DecodeString(o.SHA256)
	if err := ensureDir(o.SocketDir); err != nil {
		return nil, fmt.Errorf("plugin socket directory: %w", err)
	}
	cmd := exec.Command(o.Binary)
	cmd.Env = minimalEnv()
	// Own process group (stopping kills the group) and a parent-death
	// signal, so a crashed core leaves no plugin behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: pluginrpc.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginrpc.ProtocolVersion: {pluginrpc.PluginName: &pluginrpc.GRPCPlugin{}},
		},
		Cmd:              cmd,
		SecureConfig:     &plugin.SecureConfig{Checksum: want, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         o.MTLS,
		SkipHostEnv:      true,
		Logger:           o.Log,
		GRPCDialOptions:  pluginrpc.DialOptions(),
		StartTimeout:     10 * time.Second,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: o.SocketDir},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	raw, err := rpc.Dispense(pluginrpc.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	p := &goPluginProcess{client: client, pc: raw.(*pluginrpc.Client), exited: make(chan struct{})}
	if rc := client.ReattachConfig(); rc != nil {
		p.pid = rc.Pid
	}
	go p.watch()
	return p, nil
}

// goPluginProcess is a plugin process run by go-plugin.
type goPluginProcess struct {
	client *plugin.Client
	pc     *pluginrpc.Client
	pid    int
	exited chan struct{}
}

func (p *goPluginProcess) Plugin() pluginpb.PluginClient { return p.pc }
func (p *goPluginProcess) Exited() <-chan struct{}       { return p.exited }
func (p *goPluginProcess) Pid() int                      { return p.pid }
func (p *goPluginProcess) Protocol() int                 { return p.client.NegotiatedVersion() }

// ServeHost serves the Host service on one brokered connection, which the
// plugin dials once at Configure and keeps.
func (p *goPluginProcess) ServeHost(srv pluginpb.HostServer) (uint32, error) {
	id := p.pc.Broker.NextId()
	go p.pc.Broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, pluginrpc.ServerOptions()...)...)
		pluginpb.RegisterHostServer(s, srv)
		return s
	})
	return id, nil
}

// watch closes exited when go-plugin reports the process gone. Owned by
// the process; it ends with it.
func (p *goPluginProcess) watch() {
	defer close(p.exited)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if p.client.Exited() {
			return
		}
	}
}

// Stop ends the process: graceful first, then the whole process group.
func (p *goPluginProcess) Stop(grace time.Duration) {
	done := make(chan struct{})
	go func() { p.client.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace + 2*time.Second):
	}
	p.killGroup()
	<-done
}

func (p *goPluginProcess) killGroup() {
	if p.pid > 0 {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}
