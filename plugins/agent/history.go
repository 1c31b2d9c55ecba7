package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/agent/provider"
)

// history appends a session's messages and events to
// <state>/<session>.jsonl when persist is set: one JSON line per entry,
// each written with a single write(2) on a file opened O_APPEND, so a
// crash leaves whole lines (the last one at worst cut short, which a
// reader skips). The provider key is never in it: it is in no message.
type history struct {
	mu sync.Mutex
	f  *os.File
}

func (p *Plugin) openHistory(cfg *config, id string) (*history, error) {
	if !cfg.persist {
		return nil, nil
	}
	f, err := os.OpenFile(filepath.Join(p.state, id+".jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &history{f: f}, nil
}

type historyLine struct {
	At      time.Time         `json:"at"`
	Message *provider.Message `json:"message,omitempty"`
	Event   *Event            `json:"event,omitempty"`
}

func (h *history) write(l historyLine) {
	if h == nil {
		return
	}
	l.At = time.Now().UTC()
	b, err := json.Marshal(l)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = h.f.Write(append(b, '\n'))
}

func (h *history) messages(ms ...provider.Message) {
	for i := range ms {
		h.write(historyLine{Message: &ms[i]})
	}
}

func (h *history) event(e Event) {
	if e.Type == "delta" { // the final event and the messages hold the text
		return
	}
	h.write(historyLine{Event: &e})
}

func (h *history) close() {
	if h == nil {
		return
	}
	_ = h.f.Sync()
	_ = h.f.Close()
}
