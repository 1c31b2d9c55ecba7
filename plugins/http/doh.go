package httpplugin

// DNS over HTTPS (RFC 8484) at /dns-query: the wire-format query of a GET
// (?dns=<base64url without padding>) or of a POST body (Content-Type
// application/dns-message) goes to the operation dns/query, called as the
// request's caller exactly as /call calls an operation (a bearer token, or
// the connection's identity: anonymous without a client certificate), and
// its answer is sent back as application/dns-message with Cache-Control
// max-age of the answer's smallest TTL. The HTTP plugin only frames the
// messages: whatever serves dns/query on the node (the DNS plugin)
// resolves them, so DoH answers what DoQ and DoT answer.
//
// Refusals of the request itself are plain text, as DoH clients expect
// (400 a missing or bad query, 413 a body over 65,535 bytes, 415 another
// content type, 404 no dns/query on this node); the gateway's own (405,
// 401 for a token the node does not accept, 429) and the call errors
// other than INVALID_INPUT and NOT_FOUND are the gateway's JSON errors.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

const (
	// dohPath is where DNS over HTTPS is served (RFC 8484's usual path).
	dohPath = "/dns-query"
	// dohType is the media type of a DNS message in wire format.
	dohType = "application/dns-message"
	// dohMaxMessage is the largest DNS message: its length is 16 bits
	// wherever it travels.
	dohMaxMessage = 65535
	// dnsQueryOp answers a DNS query: {"message": <base64>} in and out.
	dnsQueryOp = "dns/query"
)

func init() {
	extraRoutes = append(extraRoutes, func(p *Plugin, mux *http.ServeMux) {
		h := p.gate(p.doh, http.MethodGet, http.MethodPost)
		mux.HandleFunc(dohPath, func(w http.ResponseWriter, r *http.Request) {
			if !p.cfg.Load().doh {
				p.decoy(w, r)
				return
			}
			h(w, r)
		})
	})
}

// dnsMessage is the input and the output of dns/query: a DNS message in
// wire format (standard base64 in JSON).
type dnsMessage struct {
	Message []byte `json:"message"`
}

// doh answers one DNS-over-HTTPS request.
func (p *Plugin) doh(w http.ResponseWriter, r *http.Request, c *caller) {
	query, ok := p.dohQuery(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Load().callTimeout)
	defer cancel()
	id, out, err := p.host.InvokeWithID(ctx, c.actor, dnsQueryOp, dnsMessage{Message: query})
	if err != nil {
		var ce *sdk.Error
		switch {
		case errors.As(err, &ce) && ce.Code == sdk.CodeNotFound:
			dohError(w, http.StatusNotFound, "no DNS service on this node")
		case errors.As(err, &ce) && ce.Code == sdk.CodeInvalidInput:
			dohError(w, http.StatusBadRequest, "invalid query: "+ce.Message)
		default:
			p.writeCallError(w, r, c, dnsQueryOp, id, err)
		}
		return
	}
	var answer dnsMessage
	var msg dns.Msg
	if json.Unmarshal(out, &answer) != nil || len(answer.Message) == 0 {
		dohError(w, http.StatusBadGateway, dnsQueryOp+" answered something other than a DNS message")
		return
	}
	if err := msg.Unpack(answer.Message); err != nil {
		dohError(w, http.StatusBadGateway, dnsQueryOp+" answered a message that does not parse: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", dohType)
	h.Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(dohMaxAge(&msg)), 10))
	h.Set("Content-Length", strconv.Itoa(len(answer.Message)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer.Message)
}

// dohQuery reads the query of a GET or POST; on false the request has
// been answered.
func (p *Plugin) dohQuery(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	var query []byte
	if r.Method == http.MethodGet {
		param := r.URL.Query().Get("dns")
		if param == "" {
			dohError(w, http.StatusBadRequest, "no query: GET "+dohPath+"?dns=<the DNS query, base64url without padding>")
			return nil, false
		}
		// RFC 8484 sends no padding; a client that pads is forgiven.
		q, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(param, "="))
		if err != nil {
			dohError(w, http.StatusBadRequest, "the dns parameter is not base64url: "+err.Error())
			return nil, false
		}
		query = q
	} else {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != dohType {
			dohError(w, http.StatusUnsupportedMediaType, "POST "+dohPath+" takes Content-Type: "+dohType+" (the query in DNS wire format)")
			return nil, false
		}
		if r.ContentLength > dohMaxMessage {
			p.dohTooLarge(w, r)
			return nil, false
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, dohMaxMessage))
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			p.dohTooLarge(w, r)
			return nil, false
		}
		if err != nil {
			dohError(w, http.StatusBadRequest, "read the body: "+err.Error())
			return nil, false
		}
		query = body
	}
	switch {
	case len(query) == 0:
		dohError(w, http.StatusBadRequest, "the query is empty")
		return nil, false
	case len(query) > dohMaxMessage:
		p.dohTooLarge(w, r)
		return nil, false
	}
	return query, true
}

func (p *Plugin) dohTooLarge(w http.ResponseWriter, r *http.Request) {
	p.stats.bodyTooLarge.Add(1)
	// The body may be unread: close an HTTP/1.1 connection rather than
	// drain it (HTTP/2 resets the stream alone).
	if r.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
	}
	dohError(w, http.StatusRequestEntityTooLarge, "a DNS message is at most 65535 bytes")
}

// dohError refuses a DoH request with a plain-text reason.
func dohError(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(reason)+1))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reason+"\n")
}

// dohMaxAge is how long an answer may be cached (RFC 8484 §5.1): the
// smallest TTL of its records (the OPT pseudo-record aside), a negative
// answer's SOA counting no more than its MINIMUM (RFC 2308); 0 when it
// has no record.
func dohMaxAge(m *dns.Msg) uint32 {
	var age uint32
	found := false
	for i, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			ttl := h.Ttl
			if soa, ok := rr.(*dns.SOA); ok && i == 1 {
				ttl = min(ttl, soa.Minttl)
			}
			if !found || ttl < age {
				age, found = ttl, true
			}
		}
	}
	return age
}

// dohPaths adds /dns-query to the OpenAPI document when DoH is on and the
// caller can call dns/query: the document shows what this caller can use.
func dohPaths(paths obj, specs []opSpec, cfg *config) {
	if !cfg.doh || !slices.ContainsFunc(specs, func(s opSpec) bool { return s.Name == dnsQueryOp }) {
		return
	}
	text := func(desc string) obj {
		return obj{"description": desc, "content": obj{"text/plain": obj{"schema": obj{"type": "string"}}}}
	}
	message := obj{dohType: obj{"schema": obj{"type": "string", "contentMediaType": dohType}}}
	responses := func() obj {
		return obj{
			"200": obj{"description": "the answer in DNS wire format",
				"headers": obj{"Cache-Control": obj{"description": "max-age=<the smallest TTL of the answer's records, 0 when none>",
					"schema": obj{"type": "string", "pattern": "^max-age=[0-9]+$"}}},
				"content": message},
			"400": text("no query, a query that is not base64url (GET), or one that is not a DNS message"),
			"401": ref(refResponses + "Unauthorized"),
			"403": ref(refResponses + "Forbidden"),
			"404": text("no DNS service on this node"),
			"429": ref(refResponses + "TooManyRequests"),
			"500": ref(refResponses + "Internal"),
			"502": text("dns/query answered something that is not a DNS message"),
			"504": ref(refResponses + "Timeout"),
		}
	}
	desc := "DNS over HTTPS (RFC 8484): the query goes to the operation dns/query as the caller; " +
		"refusals of the request itself (400, 404, 413, 415) are plain text."
	get := obj{"operationId": "doh.get", "summary": "DNS over HTTPS, the query in the URL", "description": desc,
		"tags": []string{"gateway"}, "responses": responses(),
		"parameters": []obj{{"name": "dns", "in": "query", "required": true,
			"description": "the DNS query in wire format, base64url without padding",
			"schema":      obj{"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}}}
	post := obj{"operationId": "doh.post", "summary": "DNS over HTTPS, the query as the body", "description": desc,
		"tags": []string{"gateway"}, "responses": responses(),
		"requestBody": obj{"required": true, "description": "the DNS query in wire format (at most 65535 bytes)", "content": message}}
	post["responses"].(obj)["413"] = text("a body over 65535 bytes")
	post["responses"].(obj)["415"] = text("a Content-Type other than " + dohType)
	paths[dohPath] = obj{"get": get, "post": post}
}
