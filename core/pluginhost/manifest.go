package pluginhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// CoreNamespaces are the operation namespaces the core owns: no plugin may
// declare them or an operation in them (docs/architecture.md D15).
var CoreNamespaces = []string{"admin", "auth", "call", "config", "core", "diag", "node", "plugin", "plugins", "services", "vault"}

var (
	pluginName  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	namespaceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	semverRE    = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// maxManifest bounds what a plugin may print as its manifest.
const maxManifest = 1 << 20

// ParseManifest reads a manifest's JSON form — what `alknet-plugin-<name>
// describe` printed, bytes from a binary the core has not trusted yet
// (fuzzed) — and validates it.
func ParseManifest(b []byte) (*pluginpb.Manifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest is %d bytes; the limit is %d", len(b), maxManifest)
	}
	m, err := pluginrpc.UnmarshalManifest(b)
	if err != nil {
		return nil, fmt.Errorf("manifest is not valid JSON of the manifest format: %w", err)
	}
	if err := ValidateManifest(m); err != nil {
		return nil, err
	}
	return m, nil
}

// ValidateManifest checks a manifest and normalises it in place (operation
// names lose a leading slash; an empty namespace list becomes the
// plugin's name): name and semver version, protocol versions, ALPNs,
// namespaces, and every operation — its name inside the plugin's own
// namespaces, its type, visibility and input schema.
func ValidateManifest(m *pluginpb.Manifest) error {
	if m == nil {
		return errors.New("no manifest")
	}
	if !pluginName.MatchString(m.Name) || len(m.Name) > 64 {
		return fmt.Errorf("manifest name %q: want [a-z][a-z0-9-]* (at most 64 characters)", m.Name)
	}
	if !semverRE.MatchString(m.Version) {
		return fmt.Errorf("plugin %s: version %q is not semver (e.g. 1.2.3)", m.Name, m.Version)
	}
	if len(m.ProtocolVersions) == 0 {
		return fmt.Errorf("plugin %s: protocol_versions is empty", m.Name)
	}
	for _, a := range m.Alpns {
		if a == "" || len(a) > 255 || a == "acme-tls/1" {
			return fmt.Errorf("plugin %s: ALPN %q is not allowed", m.Name, a)
		}
	}
	if len(m.Namespaces) == 0 {
		m.Namespaces = []string{m.Name}
	}
	for _, ns := range m.Namespaces {
		if !namespaceRE.MatchString(ns) {
			return fmt.Errorf("plugin %s: namespace %q: want [a-z0-9][a-z0-9_.-]*", m.Name, ns)
		}
		if slices.Contains(CoreNamespaces, ns) {
			return fmt.Errorf("plugin %s declares namespace %q, which the core owns", m.Name, ns)
		}
	}
	seen := map[string]bool{}
	for i, op := range m.Operations {
		if op == nil {
			return fmt.Errorf("plugin %s: operations[%d] is empty", m.Name, i)
		}
		name := strings.TrimPrefix(op.Name, "/")
		if !call.ValidName(name) {
			return fmt.Errorf("plugin %s: operations[%d] name %q: want service/op in lower case", m.Name, i, op.Name)
		}
		if seen[name] {
			return fmt.Errorf("plugin %s: operation %s declared twice", m.Name, name)
		}
		seen[name] = true
		op.Name = name
		if ns := namespaceOf(name); !slices.Contains(m.Namespaces, ns) {
			owner := "no plugin"
			if slices.Contains(CoreNamespaces, ns) {
				owner = "the core"
			}
			return fmt.Errorf("plugin %s declares operation %s outside its namespaces %v (namespace %q is owned by %s)", m.Name, name, m.Namespaces, ns, owner)
		}
		switch call.OpType(op.OpType) {
		case call.Query, call.Mutation, call.Subscription:
		default:
			return fmt.Errorf("plugin %s: operation %s: op_type %q is not query, mutation or subscription", m.Name, name, op.OpType)
		}
		switch call.Visibility(op.Visibility) {
		case "", call.External, call.Internal:
		default:
			return fmt.Errorf("plugin %s: operation %s: visibility %q is not external or internal", m.Name, name, op.Visibility)
		}
		if op.InputSchema != nil {
			if err := call.CheckSchema(name, schemaJSON(op.InputSchema)); err != nil {
				return fmt.Errorf("plugin %s: %w", m.Name, err)
			}
		}
		for j, e := range op.Env {
			if !call.ValidName(strings.TrimPrefix(e, "/")) {
				return fmt.Errorf("plugin %s: operation %s: env[%d] %q is not an operation name", m.Name, name, j, e)
			}
			op.Env[j] = strings.TrimPrefix(e, "/")
		}
	}
	caps := map[string]bool{}
	for _, c := range m.Capabilities {
		if c.GetName() == "" {
			return errors.New("plugin " + m.Name + ": a capability has no name")
		}
		if caps[c.Name] {
			return fmt.Errorf("plugin %s: capability %s declared twice", m.Name, c.Name)
		}
		caps[c.Name] = true
	}
	return nil
}

func namespaceOf(op string) string {
	ns, _, _ := strings.Cut(op, "/")
	return ns
}

// Speaks reports the highest protocol version both m and supported list.
func Speaks(m *pluginpb.Manifest, supported []int) (int, bool) {
	best := 0
	for _, v := range m.ProtocolVersions {
		if slices.Contains(supported, int(v)) && int(v) > best {
			best = int(v)
		}
	}
	return best, best > 0
}

// schemaJSON is a JSON Schema document carried as a protobuf Value.
func schemaJSON(v *structpb.Value) json.RawMessage {
	if v == nil {
		return nil
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// opSpec is the registry's spec of a plugin operation.
func opSpec(plugin string, op *pluginpb.OperationSpec) call.Spec {
	ac := op.GetAccessControl()
	s := call.Spec{Name: op.Name, OpType: call.OpType(op.OpType), Visibility: call.Visibility(op.Visibility), RemoteSafe: op.RemoteSafe,
		Description: op.Description, InputSchema: schemaJSON(op.InputSchema), OutputSchema: schemaJSON(op.OutputSchema),
		ResourceIDPath: op.ResourceIdPath, Provenance: owner(plugin), ActsAsCaller: op.ActsAsCaller,
		AccessControl: call.AccessControl{RequiredScopes: ac.GetRequiredScopes(), RequiredScopesAny: ac.GetRequiredScopesAny(),
			ResourceType: ac.GetResourceType(), ResourceAction: ac.GetResourceAction()}}
	for _, e := range op.ErrorSchemas {
		s.ErrorSchemas = append(s.ErrorSchemas, call.ErrorSchema{Code: e.Code, Description: e.Description, Schema: schemaJSON(e.Schema), HTTPStatus: int(e.HttpStatus)})
	}
	return s
}

// owner is the provenance of plugin name's operations and ALPNs.
func owner(plugin string) string { return "plugin:" + plugin }

// identityProto is the wire form of an identity (nil: anonymous).
func identityProto(id *auth.Identity) *pluginpb.Identity {
	if id == nil {
		return nil
	}
	p := &pluginpb.Identity{Id: id.ID, Scopes: id.Scopes}
	if len(id.Resources) > 0 {
		p.Resources = make(map[string]*pluginpb.Actions, len(id.Resources))
		for k, v := range id.Resources {
			p.Resources[k] = &pluginpb.Actions{Actions: v}
		}
	}
	return p
}

// callError is the wire form of a call error.
func callErrorProto(e *call.Error) *pluginpb.CallError {
	p := &pluginpb.CallError{Code: e.Code, Message: e.Message, Retryable: e.Retryable}
	if e.Details != nil {
		p.Details, _ = json.Marshal(e.Details)
	}
	return p
}

// callErrorFrom reads a plugin's call error; a missing code is INTERNAL.
func callErrorFrom(p *pluginpb.CallError) *call.Error {
	if p.GetCode() == "" {
		return call.Errorf(call.CodeInternal, "internal error")
	}
	e := &call.Error{Code: p.Code, Message: p.Message, Retryable: p.Retryable}
	if len(p.Details) > 0 {
		e.Details = json.RawMessage(p.Details)
	}
	return e
}

// compareSemver orders two semver strings (pre-release sorts first).
func compareSemver(a, b string) int {
	pa, pb := splitSemver(a), splitSemver(b)
	for i := range 3 {
		if pa.n[i] != pb.n[i] {
			if pa.n[i] < pb.n[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case pa.pre == pb.pre:
		return 0
	case pa.pre == "":
		return 1
	case pb.pre == "":
		return -1
	}
	return strings.Compare(pa.pre, pb.pre)
}

type semver struct {
	n   [3]int
	pre string
}

func splitSemver(s string) semver {
	var v semver
	s, _, _ = strings.Cut(s, "+")
	s, v.pre, _ = strings.Cut(s, "-")
	for i, p := range strings.SplitN(s, ".", 3) {
		v.n[i], _ = strconv.Atoi(p)
	}
	return v
}
