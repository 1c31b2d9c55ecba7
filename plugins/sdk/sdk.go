// Package sdk is what an Alknet plugin imports. A plugin is a separate
// executable, alknet-plugin-<name>, that the node launches, verifies and
// supervises (docs/spec/plugins.md). It serves connections for its ALPNs,
// operations for the node's call registry, or both:
//
//	func main() { sdk.Serve(hello{}) }
//
// A plugin is any value with an Info method, and implements only what it
// serves (small interfaces, each optional):
//
//   - ConnServer: ServeConn serves one connection on one of its ALPNs;
//     streams are net.Conn values.
//   - OperationSet: Operations returns a table of operations, built with
//     Query, Mutation and Subscription from typed Go functions. The SDK
//     derives their JSON Schemas, decodes the input, answers NOT_FOUND
//     and turns returned errors into call errors.
//   - Configurer: Configure receives the settings at start and again on
//     every reload that changes them.
//
// Secrets arrive per connection and per call as Capabilities, never through
// the environment. A plugin never states an identity: nested calls and
// internal dials (Host) act as the connection, call or session being
// served. Logger writes lines the node shows under the plugin's name.
//
// The Example shows a complete plugin; plugins/echo is a larger one;
// sdktest runs a plugin in-process behind the node's own call and stream
// machinery; README.md walks through a plugin in a module of its own.
package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// ProtocolVersion is the core↔plugin protocol version this SDK speaks.
const ProtocolVersion = pluginrpc.ProtocolVersion

// Info describes a plugin (its manifest, docs/spec/plugins.md §1).
type Info struct {
	// Name is [a-z][a-z0-9-]*; the executable is alknet-plugin-<name>.
	Name string
	// Version is semver (1.2.3).
	Version     string
	Description string
	// ALPNs the plugin serves connections for (needs ConnServer).
	ALPNs []string
	// Namespaces the plugin's operations live in (default: Name). No
	// namespace of the core or of another plugin is accepted.
	Namespaces []string
	// Capabilities are the secrets the plugin asks the node for.
	Capabilities []CapabilitySpec
	// ConfigSchema is the JSON Schema of the plugin's settings.
	ConfigSchema json.RawMessage
	// ProtocolVersions overrides the protocol versions reported (default:
	// ProtocolVersion). For tests of version negotiation.
	ProtocolVersions []int
}

// CapabilitySpec declares a secret the plugin needs; the operator grants
// it in the node's config ([plugins.<name>.capabilities]).
type CapabilitySpec struct {
	Name        string
	Required    bool
	Description string
}

// Plugin is what Serve runs: a value describing itself, implementing
// ConnServer, OperationSet and Configurer as it needs.
type Plugin interface {
	Info() Info
}

// ConnServer serves connections on the plugin's ALPNs.
type ConnServer interface {
	// ServeConn serves one connection. Return when AcceptStream fails (the
	// connection closed or the node drains) and your streams are done.
	ServeConn(ctx context.Context, c *Conn) error
}

// OperationSet is a plugin's table of operations.
type OperationSet interface {
	Operations() []Op
}

// Configurer receives the plugin's settings (JSON; never secrets) and the
// host handle: at start, before any connection or call, and again on each
// reload (SIGHUP), changed or not, so that files they name are read again.
// Returning ErrRestartRequired on a reload makes the node restart the
// plugin without downtime; another error keeps the settings that are
// running (at start: the plugin does not start).
type Configurer interface {
	Configure(ctx context.Context, settings json.RawMessage, host *Host) error
}

// SettingsValidator checks settings without applying them: what Configure
// would refuse at start (an unknown key, a program that is not installed,
// a file that cannot be read). `alknet config check` runs it through
// `alknet-plugin-<name> validate`, so an operator learns of a bad setting
// before the node refuses to start the plugin (docs/spec/plugins.md §1).
// It runs without a node: no Host, no capabilities.
type SettingsValidator interface {
	ValidateSettings(settings json.RawMessage) error
}

// ErrRestartRequired tells the node that new settings take a restart.
var ErrRestartRequired = errors.New("these settings take effect after a restart")

// Serve runs the plugin. `alknet-plugin-<name> describe` prints the
// manifest as JSON and exits; `alknet-plugin-<name> validate` checks the
// settings JSON on stdin (SettingsValidator) and exits 0, or 1 with the
// reason on stderr; otherwise it serves the node over go-plugin
// and exits when the node stops it or disappears.
func Serve(p Plugin) {
	srv, err := newServer(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[0], err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "describe" {
		b, err := pluginrpc.MarshalManifest(srv.manifest)
		if err != nil {
			fmt.Fprintln(os.Stderr, "describe:", err)
			os.Exit(1)
		}
		fmt.Println(string(b))
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "validate" {
		os.Exit(validate(p, os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(pluginrpc.MagicCookieKey) != pluginrpc.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is an Alknet plugin: install it with `alknet plugin install %s`; `%s describe` prints its manifest.\n", os.Args[0], os.Args[0], os.Args[0])
		os.Exit(1)
	}
	go watchParent(os.Getppid())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginrpc.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginrpc.ProtocolVersion: {pluginrpc.PluginName: &pluginrpc.GRPCPlugin{NewServer: func(dial pluginrpc.HostDialer) pluginpb.PluginServer {
				srv.dial = dial
				return srv
			}}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, pluginrpc.ServerOptions()...)...)
		},
		Logger: logger.Named("go-plugin"),
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
