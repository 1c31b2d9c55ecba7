package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/pluginhost"
)

// checkPluginSettings asks every plugin the node would run whether it
// accepts its settings in cfg (docs/spec/plugins.md §1): the installed
// version the node would select, else the bundled binary beside this
// one. Plugins that are disabled are skipped; a configured plugin that is
// neither installed nor bundled is reported, not failed (it may be
// installed before the node starts).
func (a *app) checkPluginSettings(cfg *config.Config) error {
	d, err := a.dataDir()
	if err != nil {
		return err
	}
	store := pluginhost.OpenStore(d.PluginsPath())
	lock, err := store.Load()
	if err != nil {
		return err
	}
	bundled := bundledDir()
	names := lock.Names()
	if bundled != "" {
		matches, _ := filepath.Glob(filepath.Join(bundled, "alknet-plugin-*"))
		for _, m := range matches {
			names = append(names, strings.TrimPrefix(filepath.Base(m), "alknet-plugin-"))
		}
	}
	names = append(names, cfg.Plugins.Names()...)
	slices.Sort(names)
	names = slices.Compact(names)

	var errs []error
	for _, name := range names {
		p := cfg.Plugins.Plugin(name)
		if p.Disabled {
			continue
		}
		binary := ""
		if inst, err := lock.Select(name, p.Version); err == nil {
			if err := store.Verify(inst); err != nil {
				errs = append(errs, fmt.Errorf("plugins.%s: %w", name, err))
				continue
			}
			binary = store.BinaryPath(inst.Name, inst.Version)
		} else if bundled != "" {
			if b := filepath.Join(bundled, "alknet-plugin-"+name); isFile(b) {
				binary = b
			}
		}
		if binary == "" {
			fmt.Fprintf(a.err, "plugins.%s: not installed here; its settings are checked when it is (alknet plugin install …)\n", name)
			continue
		}
		var settings json.RawMessage
		if len(p.Settings) > 0 {
			if settings, err = json.Marshal(p.Settings); err != nil {
				errs = append(errs, fmt.Errorf("plugins.%s: settings: %w", name, err))
				continue
			}
		}
		ctx := context.Background()
		m, err := pluginhost.Describe(ctx, binary)
		if err != nil {
			errs = append(errs, fmt.Errorf("plugins.%s: %w", name, err))
			continue
		}
		if err := pluginhost.ValidateSettings(ctx, binary, m, settings); err != nil {
			var se *pluginhost.SettingsError
			if errors.As(err, &se) {
				errs = append(errs, fmt.Errorf("%w — the node would not start this plugin", se))
			} else {
				errs = append(errs, fmt.Errorf("plugins.%s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// bundledDir is the directory of this executable, where `make build` puts
// the plugins the node installs at start ("" if unknown).
func bundledDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return ""
	}
	return filepath.Dir(exe)
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// checkImports reads each [[call.imports]] target as the node will dial
// it (the config package cannot: it sits below the dialer).
func checkImports(cfg *config.Config) error {
	for i, imp := range cfg.Call.Imports {
		if _, _, err := dial.ParseTarget(imp.Target); err != nil {
			return fmt.Errorf("call.imports[%d].target: %w", i, err)
		}
	}
	return nil
}
