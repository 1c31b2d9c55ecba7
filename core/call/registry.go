package call

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/capability"
)

// OpType is query, mutation or subscription.
type OpType string

// Operation types.
const (
	Query        OpType = "query"
	Mutation     OpType = "mutation"
	Subscription OpType = "subscription"
)

// Visibility says who may call an operation: external (the wire) or
// internal (nested calls and imported peers only).
type Visibility string

// Visibilities.
const (
	External Visibility = "external"
	Internal Visibility = "internal"
)

// AccessControl is checked against the caller before a handler runs.
type AccessControl struct {
	RequiredScopes    []string `json:"required_scopes,omitempty"`
	RequiredScopesAny []string `json:"required_scopes_any,omitempty"`
	ResourceType      string   `json:"resource_type,omitempty"`
	ResourceAction    string   `json:"resource_action,omitempty"`
}

// ErrorSchema declares an operation-specific error code.
type ErrorSchema struct {
	Code        string          `json:"code"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	HTTPStatus  int             `json:"http_status,omitempty"`
}

// Spec describes an operation (docs/spec/call.md §4).
type Spec struct {
	Name           string          `json:"name"`
	Namespace      string          `json:"namespace"`
	OpType         OpType          `json:"op_type"`
	Visibility     Visibility      `json:"visibility"`
	RemoteSafe     bool            `json:"remote_safe"`
	Description    string          `json:"description,omitempty"`
	InputSchema    json.RawMessage `json:"input_schema,omitempty"`
	OutputSchema   json.RawMessage `json:"output_schema,omitempty"`
	ErrorSchemas   []ErrorSchema   `json:"error_schemas,omitempty"`
	AccessControl  AccessControl   `json:"access_control"`
	ResourceIDPath string          `json:"resource_id_path,omitempty"`
	// ActsAsCaller: the handler may call other operations as its caller
	// (through every gate, with the caller's identity), not only its env
	// with its own authority (docs/spec/plugins.md §4).
	ActsAsCaller bool `json:"acts_as_caller,omitempty"`
	// Provenance: "local", "plugin:<name>" or "remote:<peer>".
	Provenance string `json:"provenance"`
}

// CallFunc serves a query or mutation.
type CallFunc func(ctx context.Context, input json.RawMessage) (any, error)

// StreamFunc serves a subscription: emit each item; return nil to complete.
type StreamFunc func(ctx context.Context, input json.RawMessage, emit func(any) error) error

// Registration is an operation with its handler and what the handler may
// use: capabilities (secrets, per call), the scoped env (names it may call)
// and the composition authority its nested calls run with.
type Registration struct {
	Spec         Spec
	Call         CallFunc
	Stream       StreamFunc
	Capabilities capability.Set
	Env          []string
	Authority    *auth.Identity
}

type entry struct {
	reg    Registration
	schema *jsonschema.Schema
}

// DefaultDeadline bounds queries and mutations (subscriptions have none).
const DefaultDeadline = 30 * time.Second

// Registry holds operations. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	ops      map[string]*entry
	log      hclog.Logger
	deadline atomic.Int64 // time.Duration
}

// SetDeadline sets the default deadline of queries and mutations.
func (r *Registry) SetDeadline(d time.Duration) { r.deadline.Store(int64(d)) }

// Deadline is the default deadline of queries and mutations (0: none).
func (r *Registry) Deadline() time.Duration { return time.Duration(r.deadline.Load()) }

// NewRegistry returns a registry with the built-in discovery operations
// (services/list, services/schema).
func NewRegistry(log hclog.Logger) *Registry {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Registry{ops: map[string]*entry{}, log: log}
	r.SetDeadline(DefaultDeadline)
	r.registerBuiltins()
	return r
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)+$`)

// normalize strips one leading slash (wire form /svc/op).
func normalize(name string) string { return strings.TrimPrefix(name, "/") }

// Register adds an operation. The handler kind must fit the op type; a
// name registered twice is an error naming both owners.
func (r *Registry) Register(reg Registration) error {
	e, err := prepare(reg)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.ops[e.reg.Spec.Name]; ok {
		return fmt.Errorf("operation %s is registered twice (%s and %s)", e.reg.Spec.Name, old.reg.Spec.Provenance, e.reg.Spec.Provenance)
	}
	r.ops[e.reg.Spec.Name] = e
	return nil
}

// SetOwned makes regs the operations of owner (their provenance, e.g.
// "plugin:ssh"), atomically: owner's operations are added or replaced, and
// those of owner not in regs are removed. An operation registered by
// another owner is never replaced: the whole set is refused, naming both
// owners, and nothing changes (docs/architecture.md D15).
func (r *Registry) SetOwned(owner string, regs []Registration) error {
	entries := make(map[string]*entry, len(regs))
	for _, reg := range regs {
		reg.Spec.Provenance = owner
		e, err := prepare(reg)
		if err != nil {
			return err
		}
		if _, dup := entries[e.reg.Spec.Name]; dup {
			return fmt.Errorf("operation %s is declared twice by %s", e.reg.Spec.Name, owner)
		}
		entries[e.reg.Spec.Name] = e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		if old, ok := r.ops[name]; ok && old.reg.Spec.Provenance != owner {
			return fmt.Errorf("operation %s belongs to %s; %s may not register it", name, old.reg.Spec.Provenance, owner)
		}
	}
	for name, e := range r.ops {
		if e.reg.Spec.Provenance == owner && entries[name] == nil {
			delete(r.ops, name)
		}
	}
	maps.Copy(r.ops, entries)
	return nil
}

// RemoveOwned removes every operation of owner, and only those.
func (r *Registry) RemoveOwned(owner string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, e := range r.ops {
		if e.reg.Spec.Provenance == owner {
			delete(r.ops, name)
		}
	}
}

// Owner returns the provenance of the operation called name, if any.
func (r *Registry) Owner(name string) (string, bool) {
	e, ok := r.lookup(name)
	if !ok {
		return "", false
	}
	return e.reg.Spec.Provenance, true
}

// NamespaceOwner returns the provenance of an operation in namespace ns
// (the text before the first slash), if there is one.
func (r *Registry) NamespaceOwner(ns string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.ops {
		if e.reg.Spec.Namespace == ns {
			return e.reg.Spec.Provenance, true
		}
	}
	return "", false
}

// prepare validates reg and compiles its input schema.
func prepare(reg Registration) (*entry, error) {
	s := &reg.Spec
	s.Name = normalize(s.Name)
	if !nameRE.MatchString(s.Name) {
		return nil, fmt.Errorf("register operation %q: names are service/op in lower case (e.g. fs/put)", s.Name)
	}
	s.Namespace = s.Name[:strings.IndexByte(s.Name, '/')]
	if s.Visibility == "" {
		s.Visibility = External
	}
	if s.Provenance == "" {
		s.Provenance = "local"
	}
	switch s.OpType {
	case Query, Mutation:
		if reg.Call == nil || reg.Stream != nil {
			return nil, fmt.Errorf("register %s: a %s needs a call handler (CallFunc), not a stream handler", s.Name, s.OpType)
		}
	case Subscription:
		if reg.Stream == nil || reg.Call != nil {
			return nil, fmt.Errorf("register %s: a subscription needs a stream handler (StreamFunc), not a call handler", s.Name)
		}
	default:
		return nil, fmt.Errorf("register %s: op_type %q is not query, mutation or subscription", s.Name, s.OpType)
	}
	if s.Visibility != External && s.Visibility != Internal {
		return nil, fmt.Errorf("register %s: visibility %q is not external or internal", s.Name, s.Visibility)
	}
	e := &entry{reg: reg}
	if len(s.InputSchema) > 0 {
		sch, err := compileSchema(s.Name, s.InputSchema)
		if err != nil {
			return nil, err
		}
		e.schema = sch
	}
	return e, nil
}

// CheckSchema reports whether raw is a JSON Schema the registry accepts
// as the input schema of operation name.
func CheckSchema(name string, raw json.RawMessage) error {
	_, err := compileSchema(name, raw)
	return err
}

// ValidName reports whether name (without a leading slash) is a valid
// operation name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

func compileSchema(name string, raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("register %s: input_schema is not JSON: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	url := "mem://" + name + "/input.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("register %s: input_schema: %w", name, err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("register %s: input_schema: %w", name, err)
	}
	return sch, nil
}

// Unregister removes an operation.
func (r *Registry) Unregister(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ops, normalize(name))
}

func (r *Registry) lookup(name string) (*entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.ops[normalize(name)]
	return e, ok
}

// Specs returns every registered spec, sorted by name.
func (r *Registry) Specs() []Spec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Spec, 0, len(r.ops))
	for _, k := range slices.Sorted(maps.Keys(r.ops)) {
		out = append(out, r.ops[k].reg.Spec)
	}
	return out
}

// Invocation is one request to the registry.
type Invocation struct {
	Name         string
	Input        json.RawMessage
	Identity     *auth.Identity
	ForwardedFor *auth.Identity
	// Internal is set for nested calls and imported-peer forwarding.
	Internal bool
	// RemoteFilter is set while serving the remote side of a default-deny
	// CallClient: only remote_safe operations exist for it.
	RemoteFilter bool
	RequestID    string
	ParentID     string
	// Subscribe says the caller expects a subscription.
	Subscribe bool
	// ParentCaps are the capabilities of the calling handler (nested calls).
	ParentCaps capability.Set
	// Peer is the session the request arrived on (nil for nested calls).
	Peer *Session
}

// Info is what a handler learns from its context.
type Info struct {
	RequestID    string
	ParentID     string
	Identity     *auth.Identity
	ForwardedFor *auth.Identity
	Internal     bool
	Capabilities capability.Set
	// Peer is the connection the request arrived on: a handler may call
	// the remote side back on it. Nil for nested calls.
	Peer *Session
	env  *envCaller
	// remoteFilter: the request came from a default-deny client's peer.
	remoteFilter bool
}

type infoKey struct{}

// FromContext returns the call information of a handler's context.
func FromContext(ctx context.Context) (*Info, bool) {
	i, ok := ctx.Value(infoKey{}).(*Info)
	return i, ok
}

// visible applies gates 1–3 (existence, remote filter, internal).
func (r *Registry) visible(inv Invocation) (*entry, *Error) {
	name := normalize(inv.Name)
	e, ok := r.lookup(name)
	if !ok {
		return nil, NotFound(name)
	}
	if inv.RemoteFilter && !e.reg.Spec.RemoteSafe {
		return nil, NotFound(name)
	}
	if e.reg.Spec.Visibility == Internal && !inv.Internal {
		return nil, NotFound(name)
	}
	return e, nil
}

// CheckAccess applies an operation's access control to an identity.
func CheckAccess(ac AccessControl, id *auth.Identity) *Error {
	if len(ac.RequiredScopes) == 0 && len(ac.RequiredScopesAny) == 0 && ac.ResourceType == "" {
		return nil
	}
	if id == nil {
		return Errorf(CodeForbidden, "authentication required")
	}
	for _, s := range ac.RequiredScopes {
		if !id.HasScope(s) {
			return Errorf(CodeForbidden, "missing required scope: %s", s)
		}
	}
	if len(ac.RequiredScopesAny) > 0 && !slices.ContainsFunc(ac.RequiredScopesAny, id.HasScope) {
		return Errorf(CodeForbidden, "missing required scope (any of: %s)", strings.Join(ac.RequiredScopesAny, ", "))
	}
	if ac.ResourceType != "" {
		actions, ok := id.Resources[ac.ResourceType]
		if !ok || len(actions) == 0 {
			return Errorf(CodeForbidden, "no access to resource type: %s", ac.ResourceType)
		}
		if ac.ResourceAction != "" && !slices.Contains(actions, ac.ResourceAction) {
			return Errorf(CodeForbidden, "missing resource permission: %s:%s", ac.ResourceType, ac.ResourceAction)
		}
	}
	return nil
}

// Invoke runs the gates in order (docs/spec/call.md §4) and then the handler.
// For subscriptions, emit receives each item; the returned output is only
// meaningful for queries and mutations.
func (r *Registry) Invoke(ctx context.Context, inv Invocation, emit func(json.RawMessage) error) (json.RawMessage, *Error) {
	e, cerr := r.visible(inv)
	if cerr != nil {
		return nil, cerr
	}
	spec := e.reg.Spec
	if inv.Subscribe != (spec.OpType == Subscription) {
		if spec.OpType == Subscription {
			return nil, Errorf(CodeInvalidOperationType, "%s is a subscription; subscribe to it", spec.Name)
		}
		return nil, Errorf(CodeInvalidOperationType, "%s is a %s, not a subscription; call it", spec.Name, spec.OpType)
	}
	// Access control before anything reads the input: what a caller who
	// may not call the operation sends costs the node nothing more, and
	// its answer does not depend on it.
	if cerr := CheckAccess(spec.AccessControl, inv.Identity); cerr != nil {
		return nil, cerr
	}
	// The deadline covers validation too.
	if spec.OpType != Subscription {
		if d := r.Deadline(); d > 0 {
			// The node's deadline, unless the caller's is as early (the
			// call server sets it on the request's context already).
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > d {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
		}
	}
	input := inv.Input
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	if e.schema != nil {
		if cerr := validate(ctx, e.schema, spec.Name, input); cerr != nil {
			return nil, cerr
		}
	}

	caps := e.reg.Capabilities
	if inv.ParentCaps.Len() > 0 && caps.Len() == 0 {
		caps = inv.ParentCaps
	}
	info := &Info{RequestID: inv.RequestID, ParentID: inv.ParentID, Identity: inv.Identity, ForwardedFor: inv.ForwardedFor,
		Internal: inv.Internal, Capabilities: caps, Peer: inv.Peer, remoteFilter: inv.RemoteFilter}
	info.env = &envCaller{r: r, reg: e.reg, parent: info}
	hctx := context.WithValue(ctx, infoKey{}, info)
	out, err := r.run(hctx, e, input, emit)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// run calls the handler with panic recovery and maps its errors.
func (r *Registry) run(ctx context.Context, e *entry, input json.RawMessage, emit func(json.RawMessage) error) (out json.RawMessage, cerr *Error) {
	spec := e.reg.Spec
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("operation handler panic", "operation", spec.Name, "panic", fmt.Sprint(p))
			out, cerr = nil, &Error{Code: CodeInternal, Message: "internal error"}
		}
	}()
	var err error
	if spec.OpType == Subscription {
		err = e.reg.Stream(ctx, input, func(v any) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b, err := marshalOutput(v)
			if err != nil {
				return err
			}
			return emit(b)
		})
	} else {
		var v any
		v, err = e.reg.Call(ctx, input)
		if err == nil {
			out, err = marshalOutput(v)
		}
	}
	if err == nil {
		return out, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, &Error{Code: CodeTimeout, Message: "deadline exceeded", Retryable: true}
	}
	if ctx.Err() != nil {
		return nil, &Error{Code: CodeInternal, Message: "request cancelled"}
	}
	ce := AsError(err)
	if !standardCode(ce.Code) && !slices.ContainsFunc(spec.ErrorSchemas, func(s ErrorSchema) bool { return s.Code == ce.Code }) {
		return nil, &Error{Code: CodeInternal, Message: ce.Message, Details: map[string]any{"original_code": ce.Code}}
	}
	if ce.Code == CodeInternal && !isCallError(err) {
		r.log.Warn("operation failed", "operation", spec.Name, "error", err)
	}
	return nil, ce
}

func isCallError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

func standardCode(c string) bool {
	switch c {
	case CodeNotFound, CodeForbidden, CodeInvalidInput, CodeInvalidOperationType, CodeTimeout, CodeInternal:
		return true
	}
	return false
}

func marshalOutput(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok {
		if raw == nil {
			return json.RawMessage("null"), nil
		}
		return raw, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	return b, nil
}

// ListFor returns the external operations id could pass the gates for.
func (r *Registry) ListFor(id *auth.Identity, remoteFilter bool) []Spec {
	var out []Spec
	for _, s := range r.Specs() {
		if s.Visibility != External || (remoteFilter && !s.RemoteSafe) || CheckAccess(s.AccessControl, id) != nil {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (r *Registry) registerBuiltins() {
	_ = r.Register(Registration{
		Spec: Spec{Name: "services/list", OpType: Query, RemoteSafe: true, Description: "operations this caller can call"},
		Call: func(ctx context.Context, _ json.RawMessage) (any, error) {
			info, _ := FromContext(ctx)
			// Each item is the spec without schemas and access control
			// (docs/spec/call.md §4): what services/schema answers for
			// these fields, it answers here too.
			type item struct {
				Name        string     `json:"name"`
				Namespace   string     `json:"namespace"`
				OpType      OpType     `json:"op_type"`
				Visibility  Visibility `json:"visibility"`
				RemoteSafe  bool       `json:"remote_safe"`
				Provenance  string     `json:"provenance"`
				Description string     `json:"description,omitempty"`
			}
			ops := []item{}
			for _, s := range r.ListFor(info.Identity, remoteFilterOf(ctx)) {
				ops = append(ops, item{s.Name, s.Namespace, s.OpType, s.Visibility, s.RemoteSafe, s.Provenance, s.Description})
			}
			return map[string]any{"operations": ops}, nil
		},
	})
	_ = r.Register(Registration{
		Spec: Spec{Name: "services/schema", OpType: Query, RemoteSafe: true, Description: "the full spec of one operation",
			InputSchema: json.RawMessage(`{"type":"object","required":["name"],"properties":{"name":{"type":"string","minLength":1}}}`)},
		Call: func(ctx context.Context, in json.RawMessage) (any, error) {
			var q struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(in, &q); err != nil {
				return nil, Errorf(CodeInvalidInput, "want {\"name\": \"svc/op\"}")
			}
			info, _ := FromContext(ctx)
			name := normalize(q.Name)
			for _, s := range r.ListFor(info.Identity, remoteFilterOf(ctx)) {
				if s.Name == name {
					return s, nil
				}
			}
			return nil, NotFound(name)
		},
	})
}

func remoteFilterOf(ctx context.Context) bool {
	info, ok := FromContext(ctx)
	return ok && info.remoteFilter
}
