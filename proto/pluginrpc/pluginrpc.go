// Package pluginrpc is the go-plugin and gRPC glue of the core ↔ plugin
// protocol that both sides share (docs/spec/plugins.md §2–§3): the
// handshake, the gRPC options and codec of both connections, the
// go-plugin plugin type that serves the plugin side and dispenses the core
// side, and the manifest's JSON form. It only translates: what a plugin
// does lives in plugins/sdk, what the core does in core/pluginhost.
package pluginrpc

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/protobuf/encoding/protojson"

	"alknet.dev/alknet/proto/pluginpb"
)

// Hand-written constants both sides must agree on besides the service
// definitions.
const (
	// ProtocolVersion is the core↔plugin protocol this code speaks,
	// negotiated by go-plugin (docs/architecture.md D6).
	ProtocolVersion = 2
	// MagicCookieKey and MagicCookieValue are go-plugin's handshake
	// cookie: a plugin binary run by hand prints a hint instead of serving.
	MagicCookieKey   = "ALKNET_PLUGIN"
	MagicCookieValue = "d9c2b4f0-alknet-plugin-v1"
	// PluginName is the name the handler is dispensed under.
	PluginName = "handler"
	// MaxMessageSize raises gRPC's 4 MiB default: operation inputs and
	// outputs may be as large as a call frame (64 MiB).
	MaxMessageSize = 64<<20 + 1<<20
	// ChunkSize is the largest stream chunk sent in one message.
	ChunkSize = 256 << 10
)

// Handshake is the go-plugin handshake of core and plugins.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   MagicCookieKey,
	MagicCookieValue: MagicCookieValue,
}

// DialOptions are the gRPC client options of both connections (the core's
// to the plugin, the plugin's to the Host service): message limits, flow
// control windows and buffers sized for 256 KiB chunks, and the codec.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(2 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})),
		experimental.WithBufferPool(ChunkBuffers),
	}
}

// ServerOptions are the gRPC server options of both connections.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(2 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		grpc.ForceServerCodecV2(Codec{}),
		experimental.BufferPool(ChunkBuffers),
	}
}

// HostDialer connects the plugin to the Host service the core announced
// in ConfigureRequest.host_broker_id.
type HostDialer func(brokerID uint32) (*grpc.ClientConn, error)

// GRPCPlugin is go-plugin's plugin type for both sides. The plugin side
// sets NewServer, which builds the Plugin service given a way to reach the
// Host service; the core side leaves it nil and dispenses a *Client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	NewServer func(dialHost HostDialer) pluginpb.PluginServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the plugin side.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	if p.NewServer == nil {
		return fmt.Errorf("pluginrpc: no plugin server")
	}
	// The Host connection carries the stream bytes: it gets the same
	// windows, buffers and codec as the main connection.
	dial := func(id uint32) (*grpc.ClientConn, error) { return broker.DialWithOptions(id, DialOptions()...) }
	pluginpb.RegisterPluginServer(s, p.NewServer(dial))
	return nil
}

// Client is what the core gets when it dispenses the plugin: the Plugin
// service and the broker on which it serves the Host service.
type Client struct {
	pluginpb.PluginClient
	Broker *plugin.GRPCBroker
}

// GRPCClient returns the core side.
func (p *GRPCPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{PluginClient: pluginpb.NewPluginClient(c), Broker: broker}, nil
}

// MarshalManifest is the manifest's JSON form, as `alknet-plugin-<name>
// describe` prints it: protojson with the field names of plugin.proto.
func MarshalManifest(m *pluginpb.Manifest) ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true, Multiline: true, Indent: "  "}.Marshal(m)
}

// UnmarshalManifest reads the JSON form. Unknown fields are refused: a
// manifest that says more than this core understands is not guessed at.
func UnmarshalManifest(b []byte) (*pluginpb.Manifest, error) {
	var m pluginpb.Manifest
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
