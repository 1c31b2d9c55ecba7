package httpplugin

// GET /openapi.json and the per-operation routes it documents
// (docs/spec/handlers.md §HTTP, "OpenAPI").
//
// The gateway's generic routes name the operation in the body (/call,
// /batch, /subscribe), which OpenAPI cannot tie to one schema per
// operation. So every operation also has a path of its own, served here
// and described by the document with the registry's schemas:
//
//	POST /call/{name...}       a query or mutation: the body is its input
//	                           (none: null); the answer is /call's
//	POST /subscribe/{name...}  a subscription as Server-Sent Events, as
//	GET  /subscribe/{name...}  /subscribe (GET: ?input=<JSON>, for EventSource)
//
// The document lists /call/<name> for each query and mutation and
// /subscribe/<name> for each subscription the caller can see
// (services/list, then services/schema for each, as the caller), so it
// is never cached across callers: it shows exactly what this caller can
// call now.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"alknet.dev/alknet/plugins/sdk"
)

func init() {
	extraRoutes = append(extraRoutes, func(p *Plugin, mux *http.ServeMux) {
		mux.HandleFunc("/openapi.json", p.gate(p.openapi, http.MethodGet))
		mux.HandleFunc("/call/{name...}", p.gate(p.callNamed, http.MethodPost))
		mux.HandleFunc("/subscribe/{name...}", p.gate(p.subscribeNamed, http.MethodPost, http.MethodGet))
	})
}

// callNamed is POST /call/<name>: /call with the operation in the path
// and its input as the whole body.
func (p *Plugin) callNamed(w http.ResponseWriter, r *http.Request, c *caller) {
	name := r.PathValue("name")
	if name == "" {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "name the operation in the path: POST /call/svc/op with the input as the body"))
		return
	}
	in, ok := p.readRawJSON(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Load().callTimeout)
	defer cancel()
	id, out, err := p.host.InvokeWithID(ctx, c.actor, name, input(in))
	if err != nil {
		p.writeCallError(w, r, c, name, id, err)
		return
	}
	writeJSON(w, http.StatusOK, callResult{RequestID: id, Output: out})
}

// subscribeNamed is /subscribe/<name>: /subscribe with the operation in
// the path, the input as the body (POST) or the input parameter (GET).
func (p *Plugin) subscribeNamed(w http.ResponseWriter, r *http.Request, c *caller) {
	name := r.PathValue("name")
	if name == "" {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "name the subscription in the path: POST /subscribe/svc/op with the input as the body"))
		return
	}
	req := callRequest{Operation: name}
	if r.Method == http.MethodGet { // EventSource can only GET
		if in := r.URL.Query().Get("input"); in != "" {
			req.Input = json.RawMessage(in)
			if !json.Valid(req.Input) {
				writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "the input parameter is not JSON"))
				return
			}
		}
	} else {
		in, ok := p.readRawJSON(w, r)
		if !ok {
			return
		}
		req.Input = in
	}
	p.stream(w, r, c, req)
}

// readRawJSON reads a body that is one JSON value, under readJSON's rules
// (413 past max_body_bytes, 400 naming the position of an error). An
// empty body is no input: nil.
func (p *Plugin) readRawJSON(w http.ResponseWriter, r *http.Request) (json.RawMessage, bool) {
	body, ok := p.readBody(w, r)
	if !ok || len(bytes.TrimSpace(body)) == 0 {
		return nil, ok
	}
	var v json.RawMessage
	if !decodeBody(w, body, &v) {
		return nil, false
	}
	return v, true
}

func (p *Plugin) openapi(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Load().callTimeout)
	defer cancel()
	specs, op, err := p.visibleSpecs(ctx, c)
	if err != nil {
		p.writeCallError(w, r, c, op, "", err)
		return
	}
	writeJSON(w, http.StatusOK, openAPIDocument(specs, p.cfg.Load()))
}

// opSpec is what the document uses of an operation spec
// (docs/spec/call.md §4).
type opSpec struct {
	Name          string          `json:"name"`
	Namespace     string          `json:"namespace"`
	OpType        string          `json:"op_type"`
	RemoteSafe    bool            `json:"remote_safe"`
	Provenance    string          `json:"provenance"`
	Description   string          `json:"description"`
	InputSchema   json.RawMessage `json:"input_schema"`
	OutputSchema  json.RawMessage `json:"output_schema"`
	ErrorSchemas  []errorSpec     `json:"error_schemas"`
	AccessControl accessControl   `json:"access_control"`
}

type errorSpec struct {
	Code        string          `json:"code"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
	HTTPStatus  int             `json:"http_status"`
}

type accessControl struct {
	RequiredScopes    []string `json:"required_scopes,omitempty"`
	RequiredScopesAny []string `json:"required_scopes_any,omitempty"`
	ResourceType      string   `json:"resource_type,omitempty"`
	ResourceAction    string   `json:"resource_action,omitempty"`
}

func (a accessControl) open() bool {
	return len(a.RequiredScopes) == 0 && len(a.RequiredScopesAny) == 0 && a.ResourceType == ""
}

// visibleSpecs are the specs of the operations c can call, by name; on
// error, op names the operation that failed.
func (p *Plugin) visibleSpecs(ctx context.Context, c *caller) ([]opSpec, string, error) {
	names, err := p.visibleNames(ctx, c)
	if err != nil {
		return nil, "services/list", err
	}
	specs, err := fetchSpecs(ctx, p, c, names, func(s *opSpec) bool { return s.Name != "" })
	if err != nil {
		return nil, "services/schema", err
	}
	visible := make([]opSpec, len(specs))
	for i, s := range specs {
		visible[i] = *s
	}
	sort.Slice(visible, func(i, j int) bool { return visible[i].Name < visible[j].Name })
	return visible, "", nil
}

// Names in the document's components.
const (
	refSchemas   = "#/components/schemas/"
	refResponses = "#/components/responses/"
	jsonType     = "application/json"
	sseType      = "text/event-stream"
)

// obj is a JSON object of the document.
type obj = map[string]any

func ref(to string) obj { return obj{"$ref": to} }

func jsonContent(schema any) obj { return obj{jsonType: obj{"schema": schema}} }

// openAPIDocument is the OpenAPI 3.1 document of the gateway and of the
// operations specs describes.
func openAPIDocument(specs []opSpec, cfg *config) obj {
	schemas := gatewaySchemas(cfg)
	paths := gatewayPaths(cfg)
	dohPaths(paths, specs, cfg)
	tags := map[string]bool{}
	keys := map[string]bool{} // operationIds, and the components named after them
	for _, o := range paths {
		for _, op := range o.(obj) {
			keys[op.(obj)["operationId"].(string)] = true
		}
	}
	for _, s := range specs {
		key := uniqueKey(keys, s.Name)
		tag := s.Namespace
		if tag == "" {
			tag, _, _ = strings.Cut(s.Name, "/")
		}
		tags[tag] = true
		switch s.OpType {
		case "query", "mutation":
			paths["/call/"+pathName(s.Name)] = obj{"post": callOperation(s, key, tag, schemas)}
		case "subscription":
			post, get := subscribeOperations(s, key, uniqueKey(keys, s.Name+".get"), tag, schemas)
			paths["/subscribe/"+pathName(s.Name)] = obj{"post": post, "get": get}
		}
	}
	tagList := []obj{{"name": "gateway", "description": "the gateway's own routes"}}
	names := make([]string, 0, len(tags))
	for t := range tags {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		if t != "gateway" {
			tagList = append(tagList, obj{"name": t, "description": "operations of namespace " + t})
		}
	}
	return obj{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
		"info": obj{
			"title":   "Alknet node",
			"version": Version,
			"description": "The HTTP gateway of an Alknet node, and the operations this caller can call. " +
				"Each query and mutation is also served at POST /call/<name> (the body is its input), " +
				"each subscription at POST or GET /subscribe/<name> (Server-Sent Events). " +
				"Without credentials a request acts as the connection's identity: anonymous, unless the " +
				"client presented a certificate the node knows.",
		},
		"tags":     tagList,
		"security": anyCaller(),
		"paths":    paths,
		"components": obj{
			"schemas":   schemas,
			"responses": errorResponses(),
			"securitySchemes": obj{
				"bearer": obj{"type": "http", "scheme": "bearer",
					"description": "an alk_… API key or a peer token; a token the node does not accept is 401, never anonymous"},
				"mutualTLS": obj{"type": "mutualTLS",
					"description": "a client certificate whose key the node knows as an identity"},
			},
		},
	}
}

// anyCaller is the security of what anonymous callers may call too.
func anyCaller() []obj {
	return []obj{{}, {"bearer": []string{}}, {"mutualTLS": []string{}}}
}

// securityOf is an operation's security requirement: the scopes it needs,
// as roles of each scheme (OpenAPI 3.1 allows roles for any scheme); one
// alternative per scope of required_scopes_any.
func securityOf(a accessControl) []obj {
	if a.open() {
		return anyCaller()
	}
	alts := [][]string{a.RequiredScopes}
	if len(a.RequiredScopesAny) > 0 {
		alts = alts[:0]
		for _, s := range a.RequiredScopesAny {
			alts = append(alts, append(append([]string{}, a.RequiredScopes...), s))
		}
	}
	var out []obj
	for _, scopes := range alts {
		if scopes == nil {
			scopes = []string{}
		}
		out = append(out, obj{"bearer": scopes}, obj{"mutualTLS": scopes})
	}
	return out
}

// accessText says in words what access_control asks.
func accessText(a accessControl) string {
	if a.open() {
		return "Any caller, anonymous too."
	}
	var parts []string
	if len(a.RequiredScopes) > 0 {
		parts = append(parts, "scopes "+strings.Join(a.RequiredScopes, ", "))
	}
	if len(a.RequiredScopesAny) > 0 {
		parts = append(parts, "one of the scopes "+strings.Join(a.RequiredScopesAny, ", "))
	}
	if a.ResourceType != "" {
		r := "resources[" + a.ResourceType + "]"
		if a.ResourceAction != "" {
			r += " containing " + a.ResourceAction
		}
		parts = append(parts, r)
	}
	return "Needs an identity with " + strings.Join(parts, " and ") + "."
}

// uniqueKey is name as an operationId and a component name
// (^[A-Za-z0-9._-]+$), distinct from the keys already taken.
func uniqueKey(taken map[string]bool, name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	key := b.String()
	for i := 2; taken[key]; i++ {
		key = b.String() + "_" + strconv.Itoa(i)
	}
	taken[key] = true
	return key
}

// pathName is an operation name as path segments, each escaped: the
// name the server sees after unescaping.
func pathName(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// addSchema adds an operation's schema to the components as name and
// returns a reference to it (or the empty schema: any JSON value).
func addSchema(schemas obj, name string, raw json.RawMessage) any {
	v, ok := embedSchema(raw, name)
	if !ok {
		return obj{}
	}
	schemas[name] = v
	return ref(refSchemas + name)
}

// embedSchema decodes a registry schema for components/schemas/name. The
// schema's references to its own parts ("#/$defs/x") are rewritten to
// where it now lives, since "#" in the document is the document's root.
func embedSchema(raw json.RawMessage, name string) (any, bool) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if m, ok := v.(obj); ok {
		delete(m, "$id") // it lives in the document now: "#" is the document
	}
	rewriteRefs(v, refSchemas+escapePointer(name))
	return v, true
}

// escapePointer escapes s as one JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// Keywords of JSON Schema 2020-12 whose values are schemas, arrays of
// schemas, or maps of names to schemas: rewriteRefs walks only these, so
// data ("const", "enum", "default", "examples") is left as it is.
var (
	subschemaKeywords = map[string]bool{"items": true, "prefixItems": true, "allOf": true, "anyOf": true, "oneOf": true,
		"not": true, "if": true, "then": true, "else": true, "additionalProperties": true, "unevaluatedProperties": true,
		"unevaluatedItems": true, "contains": true, "propertyNames": true, "contentSchema": true, "additionalItems": true}
	schemaMapKeywords = map[string]bool{"properties": true, "patternProperties": true, "$defs": true,
		"definitions": true, "dependentSchemas": true}
)

// rewriteRefs points the document-relative references of schema v
// ("#", "#/…") at base.
func rewriteRefs(v any, base string) {
	switch s := v.(type) {
	case []any:
		for _, e := range s {
			rewriteRefs(e, base)
		}
	case obj:
		for k, e := range s {
			switch {
			case k == "$ref" || k == "$dynamicRef":
				if r, ok := e.(string); ok && (r == "#" || strings.HasPrefix(r, "#/")) {
					s[k] = base + r[1:]
				}
			case subschemaKeywords[k]:
				rewriteRefs(e, base)
			case schemaMapKeywords[k]:
				if m, ok := e.(obj); ok {
					for _, sub := range m {
						rewriteRefs(sub, base)
					}
				}
			}
		}
	}
}

// inputRequired: the input schema refuses null (no body), as far as its
// top-level type says.
func inputRequired(raw json.RawMessage) bool {
	var s struct {
		Type any `json:"type"`
	}
	if json.Unmarshal(raw, &s) != nil || s.Type == nil {
		return false
	}
	switch t := s.Type.(type) {
	case string:
		return t != "null"
	case []any:
		for _, e := range t {
			if e == "null" {
				return false
			}
		}
		return true
	}
	return false
}

// describe is an operation's description: its own, and who may call it.
func describe(s opSpec) string {
	d := s.Description
	if d != "" {
		d += "\n\n"
	}
	return d + fmt.Sprintf("Operation `%s` (%s, %s). %s", s.Name, s.OpType, s.Provenance, accessText(s.AccessControl))
}

func summary(s opSpec) string {
	if s.Description == "" {
		return s.Name
	}
	line, _, _ := strings.Cut(s.Description, "\n")
	return line
}

// extension is the operation's spec fields the OpenAPI document has no
// place for.
func extension(s opSpec) obj {
	x := obj{"name": s.Name, "op_type": s.OpType, "remote_safe": s.RemoteSafe, "provenance": s.Provenance}
	if !s.AccessControl.open() {
		x["access_control"] = s.AccessControl
	}
	return x
}

func callOperation(s opSpec, key, tag string, schemas obj) obj {
	in := addSchema(schemas, key+".Input", s.InputSchema)
	out := addSchema(schemas, key+".Output", s.OutputSchema)
	result := obj{"type": "object", "required": []string{"output"}, "properties": obj{
		"request_id": obj{"type": "string", "description": "the id the node's logs name this call by"},
		"output":     out,
	}}
	responses := operationErrors(s, key, schemas)
	responses["200"] = obj{"description": "the operation's output", "content": jsonContent(result)}
	return obj{
		"operationId": key,
		"summary":     summary(s),
		"description": describe(s),
		"tags":        []string{tag},
		"security":    securityOf(s.AccessControl),
		"requestBody": obj{
			"description": "the operation's input (no body: null)",
			"required":    inputRequired(s.InputSchema),
			"content":     jsonContent(in),
		},
		"responses":          responses,
		"x-alknet-operation": extension(s),
	}
}

func subscribeOperations(s opSpec, key, getKey, tag string, schemas obj) (post, get obj) {
	in := addSchema(schemas, key+".Input", s.InputSchema)
	item := addSchema(schemas, key+".Item", s.OutputSchema)
	itemName := "any JSON value"
	if r, ok := item.(obj); ok && r["$ref"] != nil {
		itemName = fmt.Sprint(r["$ref"])
	}
	stream := obj{"description": "Server-Sent Events: `data: <item>` per item (" + itemName +
		"), then `event: completed`; an error after the first item is `event: error` with the call error",
		"content": obj{sseType: obj{"schema": obj{"type": "string"}}}}
	responses := func() obj {
		r := operationErrors(s, key, schemas)
		r["200"] = stream
		return r
	}
	common := func(id string) obj {
		return obj{"operationId": id, "summary": summary(s), "description": describe(s), "tags": []string{tag},
			"security": securityOf(s.AccessControl), "responses": responses(), "x-alknet-operation": extension(s)}
	}
	post = common(key)
	post["requestBody"] = obj{"description": "the subscription's input (no body: null)",
		"required": inputRequired(s.InputSchema), "content": jsonContent(in)}
	get = common(getKey)
	get["parameters"] = []obj{{"name": "input", "in": "query", "required": inputRequired(s.InputSchema),
		"description": "the subscription's input as JSON (for EventSource, which can only GET)",
		"content":     jsonContent(in)}}
	return post, get
}

// operationErrors are an operation's error answers: the gateway's, and
// each code it declares at its http_status (500 when it declares none).
func operationErrors(s opSpec, key string, schemas obj) obj {
	responses := obj{}
	for _, st := range []struct{ status, name string }{{"400", "BadRequest"}, {"401", "Unauthorized"},
		{"403", "Forbidden"}, {"404", "NotFound"}, {"413", "TooLarge"}, {"429", "TooManyRequests"},
		{"500", "Internal"}, {"504", "Timeout"}} {
		responses[st.status] = ref(refResponses + st.name)
	}
	declared := map[int][]errorSpec{}
	codeKeys := map[string]bool{}
	for _, e := range s.ErrorSchemas {
		st := e.HTTPStatus
		if st < 400 || st > 599 {
			st = http.StatusInternalServerError
		}
		declared[st] = append(declared[st], e)
	}
	for st, errs := range declared {
		var variants []any
		var codes []string
		for _, e := range errs {
			codes = append(codes, e.Code)
			v := obj{"allOf": []any{ref(refSchemas + "Error")},
				"properties": obj{"code": obj{"const": e.Code}}}
			if e.Description != "" {
				v["description"] = e.Description
			}
			if d := addSchema(schemas, key+".Error."+uniqueKey(codeKeys, e.Code), e.Schema); len(d.(obj)) > 0 {
				v["properties"].(obj)["details"] = d
			}
			variants = append(variants, v)
		}
		status := strconv.Itoa(st)
		desc := "the operation's own error " + strings.Join(codes, ", ")
		if _, generic := responses[status]; generic {
			// The gateway answers this status too, with its own codes.
			variants = append(variants, ref(refSchemas+"Error"))
			desc += ", or " + http.StatusText(st)
		}
		var schema any = obj{"anyOf": variants}
		if len(variants) == 1 {
			schema = variants[0]
		}
		responses[status] = obj{"description": desc, "content": jsonContent(schema)}
	}
	return responses
}

// errorResponses are the gateway's error answers (docs/spec/handlers.md
// §HTTP): each is the call error as JSON.
func errorResponses() obj {
	r := func(desc string) obj {
		return obj{"description": desc, "content": jsonContent(ref(refSchemas + "Error"))}
	}
	return obj{
		"BadRequest":      r("INVALID_INPUT (the body is not JSON, or the input does not match the input schema) or INVALID_OPERATION_TYPE"),
		"Unauthorized":    r("FORBIDDEN without credentials, or a token the node does not accept"),
		"Forbidden":       r("FORBIDDEN: the caller's identity lacks a scope or resource the operation needs"),
		"NotFound":        r("NOT_FOUND: no such operation for this caller"),
		"TooLarge":        r("the body is larger than max_body_bytes"),
		"TooManyRequests": r("too many concurrent requests (or open streams) for this identity"),
		"Internal":        r("INTERNAL, or an operation's own error code that declares no http_status"),
		"Timeout":         r("TIMEOUT: no answer within the call deadline (retryable)"),
	}
}

// gatewaySchemas are the schemas of the gateway's own routes.
func gatewaySchemas(cfg *config) obj {
	str := obj{"type": "string"}
	return obj{
		"Error": obj{"type": "object", "description": "a call error (docs/spec/call.md §3)",
			"required": []string{"code", "message", "retryable"},
			"properties": obj{"code": str, "message": str, "retryable": obj{"type": "boolean"},
				"details": obj{}, "request_id": str}},
		"CallRequest": obj{"type": "object", "required": []string{"operation"}, "additionalProperties": false,
			"properties": obj{"operation": obj{"type": "string", "minLength": 1, "description": "svc/op (a leading slash is allowed)"},
				"input": obj{"description": "the operation's input (absent: null)"}}},
		"CallResult": obj{"type": "object", "required": []string{"output"},
			"properties": obj{"request_id": str, "output": obj{}}},
		"BatchItem": obj{"type": "object",
			"description": "one call of a batch: its output, or its status and call error",
			"properties": obj{"request_id": str, "output": obj{}, "status": obj{"type": "integer"},
				"error": ref(refSchemas + "Error")}},
		"OperationSummary": obj{"type": "object", "required": []string{"name", "op_type"},
			"properties": obj{"name": str, "namespace": str,
				"op_type":    obj{"enum": []string{"query", "mutation", "subscription"}},
				"visibility": str, "remote_safe": obj{"type": "boolean"}, "provenance": str, "description": str}},
		"OperationSpec": obj{"type": "object", "required": []string{"name", "op_type"},
			"description": "an operation spec (docs/spec/call.md §4)",
			"properties": obj{"name": str, "namespace": str,
				"op_type":    obj{"enum": []string{"query", "mutation", "subscription"}},
				"visibility": str, "remote_safe": obj{"type": "boolean"}, "provenance": str, "description": str,
				"input_schema": obj{}, "output_schema": obj{}, "error_schemas": obj{"type": "array"},
				"access_control": obj{"type": "object"}, "resource_id_path": str}},
		"Batch": obj{"type": "array", "maxItems": cfg.maxBatch, "items": ref(refSchemas + "CallRequest")},
	}
}

// gatewayPaths are the gateway's own routes.
func gatewayPaths(cfg *config) obj {
	errs := func(statuses ...string) obj {
		names := map[string]string{"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
			"413": "TooLarge", "429": "TooManyRequests", "500": "Internal", "504": "Timeout"}
		r := obj{}
		for _, s := range statuses {
			r[s] = ref(refResponses + names[s])
		}
		return r
	}
	with := func(r obj, status string, v obj) obj { r[status] = v; return r }
	op := func(id, summary string, responses obj) obj {
		return obj{"operationId": id, "summary": summary, "tags": []string{"gateway"}, "responses": responses}
	}
	callErrs := []string{"400", "401", "403", "404", "413", "429", "500", "504"}
	sse := obj{"description": "Server-Sent Events: `data: <item>` per item, then `event: completed`; " +
		"an error after the first item is `event: error` with the call error",
		"content": obj{sseType: obj{"schema": obj{"type": "string"}}}}
	subscribePost := op("subscribe", "a subscription as Server-Sent Events", with(errs(callErrs...), "200", sse))
	subscribePost["requestBody"] = obj{"required": true, "content": jsonContent(ref(refSchemas + "CallRequest"))}
	subscribeGet := op("subscribe.get", "a subscription as Server-Sent Events, for EventSource", with(errs(callErrs...), "200", sse))
	subscribeGet["parameters"] = []obj{
		{"name": "operation", "in": "query", "required": true, "schema": obj{"type": "string", "minLength": 1}},
		{"name": "input", "in": "query", "required": false, "description": "the input as JSON",
			"content": jsonContent(obj{})},
	}
	call := op("call", "call a query or mutation", with(errs(callErrs...), "200",
		obj{"description": "the operation's output", "content": jsonContent(ref(refSchemas + "CallResult"))}))
	call["requestBody"] = obj{"required": true, "content": jsonContent(ref(refSchemas + "CallRequest"))}
	batch := op("batch", fmt.Sprintf("up to %d calls, run concurrently; answers in request order", cfg.maxBatch),
		with(errs("400", "401", "413", "429", "500", "504"), "200", obj{"description": "one item per call, in request order",
			"content": jsonContent(obj{"type": "array", "items": ref(refSchemas + "BatchItem")})}))
	batch["requestBody"] = obj{"required": true, "content": jsonContent(ref(refSchemas + "Batch"))}
	search := op("search", "the caller's operations whose name contains q", with(errs("401", "429", "500", "504"), "200",
		obj{"description": "the matching operations", "content": jsonContent(obj{"type": "object",
			"properties": obj{"operations": obj{"type": "array", "items": ref(refSchemas + "OperationSummary")}}})}))
	search["parameters"] = []obj{{"name": "q", "in": "query", "required": false, "schema": obj{"type": "string"}}}
	schema := op("schema", "one operation's spec", with(errs("400", "401", "404", "429", "500", "504"), "200",
		obj{"description": "the spec", "content": jsonContent(ref(refSchemas + "OperationSpec"))}))
	schema["parameters"] = []obj{{"name": "name", "in": "query", "required": true, "schema": obj{"type": "string", "minLength": 1}}}
	healthz := op("healthz", "the plugin answers", obj{"200": obj{"description": "ok",
		"content": obj{"text/plain": obj{"schema": obj{"type": "string", "const": "ok\n"}}}}})
	healthz["security"] = []obj{{}}
	doc := op("openapi", "this document: the gateway and the operations this caller can call", with(errs("401", "429", "500", "504"),
		"200", obj{"description": "an OpenAPI 3.1 document", "content": jsonContent(obj{"type": "object"})}))
	return obj{
		"/healthz":      obj{"get": healthz},
		"/call":         obj{"post": call},
		"/batch":        obj{"post": batch},
		"/search":       obj{"get": search},
		"/schema":       obj{"get": schema},
		"/subscribe":    obj{"post": subscribePost, "get": subscribeGet},
		"/openapi.json": obj{"get": doc},
	}
}
