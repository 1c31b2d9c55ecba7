package pluginhost

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// InProcess returns a Launcher that serves a plugin inside this process,
// over in-memory gRPC connections with the options and codec of a launched
// process: everything production runs but the process boundary and
// go-plugin's handshake. newServer builds the plugin side (the SDK's
// server) given a way to reach the Host service. Tests use it: sdktest,
// and the supervisor's unit tests.
func InProcess(newServer func(dialHost pluginrpc.HostDialer) pluginpb.PluginServer) Launcher {
	return &inProcessLauncher{newServer: newServer}
}

type inProcessLauncher struct {
	newServer func(pluginrpc.HostDialer) pluginpb.PluginServer

	mu   sync.Mutex
	last *InProcessProcess
}

// Launch starts a fresh plugin server.
func (l *inProcessLauncher) Launch(context.Context, LaunchSpec) (Process, error) {
	p := &InProcessProcess{exited: make(chan struct{}), hosts: map[uint32]*bufconn.Listener{}}
	p.pluginLn = bufconn.Listen(1 << 20)
	p.pluginSrv = grpc.NewServer(pluginrpc.ServerOptions()...)
	pluginpb.RegisterPluginServer(p.pluginSrv, l.newServer(p.dialHost))
	go func() { _ = p.pluginSrv.Serve(p.pluginLn) }()
	cc, err := dialBufconn(p.pluginLn)
	if err != nil {
		p.Stop(0)
		return nil, err
	}
	p.cc = cc
	p.pc = pluginpb.NewPluginClient(cc)
	l.mu.Lock()
	l.last = p
	l.mu.Unlock()
	return p, nil
}

// Last is the most recently launched process (tests crash it with Stop).
func (l *inProcessLauncher) Last() *InProcessProcess {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func dialBufconn(ln *bufconn.Listener) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///plugin", append(pluginrpc.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
}

// InProcessProcess is a plugin served in this process.
type InProcessProcess struct {
	pluginLn  *bufconn.Listener
	pluginSrv *grpc.Server
	cc        *grpc.ClientConn
	pc        pluginpb.PluginClient

	mu       sync.Mutex
	hosts    map[uint32]*bufconn.Listener
	hostSrvs []*grpc.Server
	nextHost uint32
	stopped  bool
	exited   chan struct{}
}

func (p *InProcessProcess) Plugin() pluginpb.PluginClient { return p.pc }
func (p *InProcessProcess) Exited() <-chan struct{}       { return p.exited }
func (p *InProcessProcess) Pid() int                      { return 0 }
func (p *InProcessProcess) Protocol() int                 { return pluginrpc.ProtocolVersion }

// ServeHost serves srv on an in-memory listener the plugin dials by id.
func (p *InProcessProcess) ServeHost(srv pluginpb.HostServer) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return 0, errors.New("plugin stopped")
	}
	p.nextHost++
	ln := bufconn.Listen(1 << 20)
	s := grpc.NewServer(pluginrpc.ServerOptions()...)
	pluginpb.RegisterHostServer(s, srv)
	go func() { _ = s.Serve(ln) }()
	p.hosts[p.nextHost] = ln
	p.hostSrvs = append(p.hostSrvs, s)
	return p.nextHost, nil
}

func (p *InProcessProcess) dialHost(id uint32) (*grpc.ClientConn, error) {
	p.mu.Lock()
	ln := p.hosts[id]
	p.mu.Unlock()
	if ln == nil {
		return nil, errors.New("no host service with that id")
	}
	return dialBufconn(ln)
}

// Stop stops the plugin's servers, as if its process had exited.
func (p *InProcessProcess) Stop(time.Duration) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		<-p.exited
		return
	}
	p.stopped = true
	srvs := p.hostSrvs
	p.mu.Unlock()
	if p.cc != nil {
		_ = p.cc.Close()
	}
	p.pluginSrv.Stop()
	for _, s := range srvs {
		s.Stop()
	}
	close(p.exited)
}
