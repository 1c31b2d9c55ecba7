// Package sdk is what an Alknet plugin imports. A plugin is a separate
// executable, alknet-plugin-<name>, that the node launches, verifies and
// supervises with HashiCorp go-plugin (gRPC). It serves connections for its
// ALPNs and operations for the node's call registry:
//
//	func main() { sdk.Serve(&echo.Handler{}) }
//
// The handler reports a Manifest, receives its settings in Configure, serves
// each routed connection in ServeConn (streams are net.Conn values) and
// answers operations in Invoke. Secrets arrive per connection and per call
// as Capabilities, never through the environment. See plugins/echo for a
// complete example and sdk/sdktest to test a handler in-process.
package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"alknet.dev/alknet/proto/pluginpb"
)

// Handler is a plugin's logic.
type Handler interface {
	// Manifest describes the plugin; it must not depend on Configure.
	Manifest() Manifest
	// Configure receives the plugin's settings (JSON, never secrets) and
	// the host handle, once per launch, before any connection or call.
	Configure(ctx context.Context, settings json.RawMessage, host *Host) error
	// ServeConn serves one connection on one of the plugin's ALPNs. Return
	// when AcceptStream fails (closed or draining) and your streams are done.
	ServeConn(ctx context.Context, c *Conn) error
	// Invoke answers one operation call. For a subscription, call.Emit
	// sends each item; return nil to complete it.
	Invoke(ctx context.Context, call *Call) (any, error)
}

// Call is one operation invocation routed to the plugin.
type Call struct {
	Operation    string
	Input        json.RawMessage
	RequestID    string
	ParentID     string
	Identity     *Identity
	ForwardedFor *Identity
	Internal     bool
	Capabilities Capabilities
	// Emit is set for subscriptions.
	Emit func(item any) error
	Host *Host
}

// Handshake is the go-plugin handshake the node expects.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  pluginpb.ProtocolVersion,
	MagicCookieKey:   pluginpb.MagicCookieKey,
	MagicCookieValue: pluginpb.MagicCookieValue,
}

// Serve runs the plugin. `alknet-plugin-<name> describe` prints the
// manifest as JSON and exits; otherwise it serves the node over go-plugin
// and exits when the node stops it or disappears.
func Serve(h Handler) {
	if len(os.Args) > 1 && os.Args[1] == "describe" {
		b, err := json.MarshalIndent(h.Manifest(), "", "  ")
		if err != nil {
			fmt.Fprintln(os.Stderr, "describe:", err)
			os.Exit(1)
		}
		fmt.Println(string(b))
		return
	}
	if os.Getenv(pluginpb.MagicCookieKey) != pluginpb.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is an Alknet plugin: install it with `alknet plugin install %s`; `%s describe` prints its manifest.\n", os.Args[0], os.Args[0], os.Args[0])
		os.Exit(1)
	}
	go watchParent(os.Getppid())
	log := hclog.New(&hclog.LoggerOptions{Name: h.Manifest().Name, Output: os.Stderr, JSONFormat: true, Level: hclog.Info})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginpb.ProtocolVersion: {pluginpb.PluginName: &GRPCPlugin{Impl: h}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, serverOptions()...)...)
		},
		Logger: log,
	})
}

// watchParent exits when the node that started us is gone, so a crashed
// node never leaves orphans (the node also sets a parent-death signal).
// Owned by the process; it runs until exit.
func watchParent(ppid int) {
	for range time.Tick(250 * time.Millisecond) {
		if os.Getppid() != ppid {
			os.Exit(0)
		}
	}
}

func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(pluginpb.MaxMessageSize),
		grpc.MaxSendMsgSize(pluginpb.MaxMessageSize),
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(2 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		grpc.ForceServerCodecV2(pluginpb.Codec{}),
		experimental.BufferPool(pluginpb.ChunkBuffers),
	}
}

// DialOptions are the gRPC client options both sides use.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(pluginpb.MaxMessageSize), grpc.MaxCallSendMsgSize(pluginpb.MaxMessageSize)),
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(2 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(pluginpb.Codec{})),
		experimental.WithBufferPool(pluginpb.ChunkBuffers),
	}
}

// ServerOptions are the gRPC server options both sides use.
func ServerOptions() []grpc.ServerOption { return serverOptions() }
