// Package hook lets sdktest build a plugin's server without the SDK
// exporting plumbing no plugin author uses.
package hook

import (
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// NewServer is set by package sdk: for a plugin value it returns a
// constructor of its Plugin service (one per launch) and its manifest.
var NewServer func(plugin any) (func(pluginrpc.HostDialer) pluginpb.PluginServer, *pluginpb.Manifest, error)
