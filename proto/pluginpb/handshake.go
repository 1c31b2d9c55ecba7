package pluginpb

// What core and plugins must agree on besides the service definitions.
// Hand-written (not generated): the go-plugin handshake and limits.
const (
	// ProtocolVersion is the core↔plugin protocol this code speaks.
	ProtocolVersion = 1
	// MagicCookieKey and MagicCookieValue are go-plugin's handshake cookie:
	// a plugin binary run by hand prints a hint instead of serving.
	MagicCookieKey   = "ALKNET_PLUGIN"
	MagicCookieValue = "d9c2b4f0-alknet-plugin-v1"
	// PluginName is the name the handler is dispensed under.
	PluginName = "handler"
	// MaxMessageSize raises gRPC's 4 MiB default: operation inputs and
	// outputs may be as large as a call frame (64 MiB).
	MaxMessageSize = 64<<20 + 1<<20
	// ChunkSize is the largest stream chunk sent in one message.
	ChunkSize = 256 << 10
	// MetaConnID and MetaStreamID name the stream of a Host.Stream call.
	MetaConnID   = "alknet-conn-id"
	MetaStreamID = "alknet-stream-id"
)
