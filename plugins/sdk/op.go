package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/google/jsonschema-go/jsonschema"
)

// OpType is the kind of an operation (docs/spec/call.md §2).
type OpType string

// Operation types.
const (
	OpQuery        OpType = "query"
	OpMutation     OpType = "mutation"
	OpSubscription OpType = "subscription"
)

// Visibility says who may call an operation.
type Visibility string

// Visibilities: external operations are callable on the wire; internal
// ones only by nested calls and imported peers.
const (
	VisibilityExternal Visibility = "external"
	VisibilityInternal Visibility = "internal"
)

// Access is the access control the node checks before a call reaches the
// plugin (docs/spec/call.md §4): every RequiredScopes entry, at least one
// of RequiredScopesAny, and ResourceType/ResourceAction against the
// caller's resources.
type Access struct {
	RequiredScopes    []string
	RequiredScopesAny []string
	ResourceType      string
	ResourceAction    string
}

// ErrorSpec declares an operation-specific error code (other than the
// standard codes); a code that is not declared reaches callers as
// INTERNAL.
type ErrorSpec struct {
	Code        Code
	Description string
	// Schema is the JSON Schema of the error's details (optional).
	Schema json.RawMessage
	// HTTPStatus the HTTP gateway answers with (0: 500).
	HTTPStatus int
}

// Op is one operation of a plugin: build it with Query, Mutation or
// Subscription and refine it with the methods below, each of which
// returns the changed copy:
//
//	sdk.Query("echo/say", say).RemoteSafe().Describe("returns its input")
type Op struct {
	name        string
	typ         OpType
	description string
	visibility  Visibility
	remoteSafe  bool
	access      Access
	// inputSchema and outputSchema are JSON Schemas; Query, Mutation and
	// Subscription derive them from the handler's Go types.
	inputSchema  json.RawMessage
	outputSchema json.RawMessage
	errors       []ErrorSpec
	env          []string
	actsAsCaller bool

	serve func(ctx context.Context, c *Call, input json.RawMessage, emit func(any) error) (any, error)
	err   error // from schema derivation, reported by Serve
}

// Name is the operation's name (service/op).
func (o Op) Name() string { return o.name }

// Query is an operation that reads: fn gets the decoded input and returns
// the output. Its input and output schemas are derived from In and Out
// (json.RawMessage or any: no schema); struct fields without omitempty
// are required, unknown fields refused.
func Query[In, Out any](name string, fn func(ctx context.Context, c *Call, in In) (Out, error)) Op {
	return unary(name, OpQuery, fn)
}

// Mutation is an operation that changes state; otherwise as Query.
func Mutation[In, Out any](name string, fn func(ctx context.Context, c *Call, in In) (Out, error)) Op {
	return unary(name, OpMutation, fn)
}

func unary[In, Out any](name string, t OpType, fn func(context.Context, *Call, In) (Out, error)) Op {
	op := Op{name: name, typ: t}
	op.inputSchema, op.err = schemaFor[In]()
	if op.err == nil {
		op.outputSchema, op.err = schemaFor[Out]()
	}
	op.serve = func(ctx context.Context, c *Call, input json.RawMessage, _ func(any) error) (any, error) {
		in, err := decode[In](input)
		if err != nil {
			return nil, err
		}
		return fn(ctx, c, in)
	}
	return op
}

// Subscription is an operation that streams: fn gets the decoded input
// and calls emit for each item; returning nil completes the subscription.
// emit fails once the caller has gone: return then.
func Subscription[In, Item any](name string, fn func(ctx context.Context, c *Call, in In, emit func(Item) error) error) Op {
	op := Op{name: name, typ: OpSubscription}
	op.inputSchema, op.err = schemaFor[In]()
	if op.err == nil {
		op.outputSchema, op.err = schemaFor[Item]()
	}
	op.serve = func(ctx context.Context, c *Call, input json.RawMessage, emit func(any) error) (any, error) {
		in, err := decode[In](input)
		if err != nil {
			return nil, err
		}
		return nil, fn(ctx, c, in, func(it Item) error { return emit(it) })
	}
	return op
}

// Describe sets the description callers see in services/schema.
func (o Op) Describe(text string) Op { o.description = text; return o }

// RemoteSafe marks the operation safe to serve to the remote side of a
// connection this node dialed (default-deny otherwise).
func (o Op) RemoteSafe() Op { o.remoteSafe = true; return o }

// Internal hides the operation from the wire: only nested calls and
// imported peers reach it.
func (o Op) Internal() Op { o.visibility = VisibilityInternal; return o }

// RequireScopes requires every one of scopes of the caller.
func (o Op) RequireScopes(scopes ...string) Op {
	o.access.RequiredScopes = append(slicesClone(o.access.RequiredScopes), scopes...)
	return o
}

// RequireAnyScope requires at least one of scopes.
func (o Op) RequireAnyScope(scopes ...string) Op {
	o.access.RequiredScopesAny = append(slicesClone(o.access.RequiredScopesAny), scopes...)
	return o
}

// RequireResource requires action on resource type typ in the caller's
// resources (action "": any action).
func (o Op) RequireResource(typ, action string) Op {
	o.access.ResourceType, o.access.ResourceAction = typ, action
	return o
}

// InputSchema replaces the derived input schema.
func (o Op) InputSchema(schema json.RawMessage) Op { o.inputSchema = schema; return o }

// OutputSchema replaces the derived output schema.
func (o Op) OutputSchema(schema json.RawMessage) Op { o.outputSchema = schema; return o }

// Errors declares operation-specific error codes.
func (o Op) Errors(errs ...ErrorSpec) Op { o.errors = append(slicesClone(o.errors), errs...); return o }

// CanCall lets the operation call names through Host.Invoke (its env).
func (o Op) CanCall(names ...string) Op { o.env = append(slicesClone(o.env), names...); return o }

// ActsAsCaller lets a call of the operation call other operations as its
// caller, with Host.Invoke(ctx, AsCaller(call), …): the caller's identity
// and every gate a call from the network meets, any operation the caller
// could call — for a gateway or an agent working on the caller's behalf.
// The declaration is shown in services/schema.
func (o Op) ActsAsCaller() Op { o.actsAsCaller = true; return o }

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// schemaFor derives the JSON Schema of T; none for json.RawMessage and
// interfaces. A struct without fields also accepts null (no input).
func schemaFor[T any]() (json.RawMessage, error) {
	t := reflect.TypeFor[T]()
	if t == rawMessageType || t.Kind() == reflect.Interface {
		return nil, nil
	}
	if t.Kind() == reflect.Struct && t.NumField() == 0 {
		return json.RawMessage(`{"type":["object","null"],"additionalProperties":false}`), nil
	}
	s, err := jsonschema.For[T](&jsonschema.ForOptions{IgnoreInvalidTypes: true})
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", t, err)
	}
	return json.Marshal(s)
}

// decode reads a call's input into In (the node validated it against the
// input schema already).
func decode[In any](input json.RawMessage) (In, error) {
	var in In
	if p, ok := any(&in).(*json.RawMessage); ok {
		*p = input
		return in, nil
	}
	if err := json.Unmarshal(input, &in); err != nil {
		return in, Errorf(CodeInvalidInput, "input: %v", err)
	}
	return in, nil
}
