package pluginhost

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// maxLogLine bounds one relayed line of a plugin's stderr; the rest of a
// longer line is dropped.
const maxLogLine = 64 << 10

// relayLog re-emits a plugin's stderr lines through log until r ends
// (docs/spec/plugins.md §2). An hclog JSON line keeps its level, message
// and fields, in the order the plugin wrote them; its timestamp is
// dropped (the node's line has its own). go-plugin's own relay decodes
// each line into a map, so every line would list its fields in a new
// order and carry a second timestamp: log watchers such as fail2ban need
// one line format. Other lines are logged as text at the level their
// "[ERROR]"-style prefix says (DEBUG otherwise); a panic and everything
// after it at ERROR.
func relayLog(log hclog.Logger, r io.Reader) {
	br := bufio.NewReaderSize(r, 4096)
	inPanic := false
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return
		}
		if len(line)+len(chunk) <= maxLogLine {
			line = append(line, chunk...)
		}
		if isPrefix {
			continue
		}
		relayLine(log, line, &inPanic)
		line = line[:0]
	}
}

func relayLine(log hclog.Logger, line []byte, inPanic *bool) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if level, module, msg, kvs, ok := parseLogLine(line); ok {
		l := log
		if module != "" {
			l = l.Named(module)
		}
		l.Log(level, msg, kvs...)
		return
	}
	s := string(line)
	switch {
	case strings.HasPrefix(s, "[TRACE]"):
		log.Trace(s)
	case strings.HasPrefix(s, "[DEBUG]"):
		log.Debug(s)
	case strings.HasPrefix(s, "[INFO]"):
		log.Info(s)
	case strings.HasPrefix(s, "[WARN]"):
		log.Warn(s)
	case strings.HasPrefix(s, "[ERROR]"):
		log.Error(s)
	case strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: "):
		*inPanic = true
		log.Error(s)
	case *inPanic:
		log.Error(s)
	default:
		log.Debug(s)
	}
}

// parseLogLine reads one hclog JSON line with its fields in the order they
// appear. A value that is not a string, number, boolean or null is kept as
// its JSON text, so nothing depends on map order.
func parseLogLine(line []byte) (level hclog.Level, module, msg string, kvs []any, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return hclog.NoLevel, "", "", nil, false
	}
	level = hclog.NoLevel
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return hclog.NoLevel, "", "", nil, false
		}
		key, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return hclog.NoLevel, "", "", nil, false
		}
		v := logValue(raw)
		switch key {
		case "@level":
			s, _ := v.(string)
			level = hclog.LevelFromString(s)
		case "@message":
			msg, _ = v.(string)
		case "@module":
			module, _ = v.(string)
		case "@timestamp", "@caller":
		default:
			kvs = append(kvs, key, v)
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') || dec.More() {
		return hclog.NoLevel, "", "", nil, false
	}
	if level == hclog.NoLevel {
		return hclog.NoLevel, "", "", nil, false
	}
	return level, module, msg, kvs, true
}

func logValue(raw json.RawMessage) any {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			return b
		}
	case 'n':
		return nil
	case '{', '[':
		return string(raw)
	default:
		return json.Number(raw)
	}
	return string(raw)
}

// relayEnd reads as empty once done is closed.
type relayEnd <-chan struct{}

func (e relayEnd) Read([]byte) (int, error) {
	<-e
	return 0, io.EOF
}

func (e relayEnd) Close() error { return nil }
