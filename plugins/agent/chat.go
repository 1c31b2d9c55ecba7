package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"

	"alknet.dev/alknet/plugins/sdk"
)

// Interactive sessions on alknet/agent (docs/spec/handlers.md §Agent): a
// stream whose first line is {"kind":"chat", …RunInput but the prompt}
// opens a session as the connection's identity (scope agent:run), kept in
// memory for as long as the stream lasts. Each following line is a user
// turn, {"prompt": "…"}; the session answers with the events of agent/run,
// one JSON line each, the turn ending with "final" or with
// {"type":"error","code","message"}. Closing or resetting the stream ends
// the session and cancels what runs.

type chatOpen struct {
	Kind string `json:"kind"`
	RunInput
}

type chatError struct {
	Type      string `json:"type"`
	SessionID string `json:"session_id,omitempty"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

func errorLine(session string, err error) chatError {
	ce := asCallError(err)
	return chatError{Type: "error", SessionID: session, Code: string(ce.Code), Message: ce.Message}
}

func (p *Plugin) serveChat(c *sdk.Conn, s *sdk.Stream, r *bufio.Reader, first []byte) {
	var open chatOpen
	if err := json.Unmarshal(first, &open); err != nil {
		writeLine(s, errorLine("", sdk.Errorf(sdk.CodeInvalidInput, "not a chat request: %v", err)))
		return
	}
	ctx, cancel := context.WithCancel(c.Context())
	defer cancel()
	// The turns, read as they come; the stream ending cancels the session.
	turns := make(chan string)
	go func() { // owned by serveChat: ends when the stream does
		defer cancel()
		defer close(turns)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var t struct {
				Prompt string `json:"prompt"`
			}
			if json.Unmarshal(line, &t) != nil || strings.TrimSpace(t.Prompt) == "" {
				continue
			}
			select {
			case turns <- t.Prompt:
			case <-ctx.Done():
				return
			}
		}
	}()
	cl := &caller{as: c, dial: c, id: c.Auth().Identity, caps: c.Capabilities()}
	cv, err := p.openConvo(ctx, cl, open.RunInput, cancel)
	if err != nil {
		writeLine(s, errorLine("", err))
		return
	}
	defer cv.close()
	emit := func(e Event) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = s.Write(append(b, '\n'))
		return err
	}
	if err := cv.send(emit, Event{Type: "session"}); err != nil {
		return
	}
	for prompt := range turns {
		if err := cv.turn(ctx, prompt, emit); err != nil {
			if ctx.Err() != nil {
				return
			}
			writeLine(s, errorLine(cv.s.info.ID, err))
		}
	}
}
