package httpplugin_test

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/miekg/dns"

	httpplugin "alknet.dev/alknet/plugins/http"
	"alknet.dev/alknet/plugins/sdk"
)

// dohPlugin is the HTTP plugin with a dns/query of its own standing in for
// the DNS plugin's: it answers a few fixed names.
type dohPlugin struct{ *httpplugin.Plugin }

func (p dohPlugin) Info() sdk.Info {
	i := p.Plugin.Info()
	i.Namespaces = []string{"http", "dns"}
	return i
}

type dohMessage struct {
	Message string `json:"message"`
}

func (p dohPlugin) Operations() []sdk.Op {
	return append(p.Plugin.Operations(),
		sdk.Query("dns/query", fakeDNSQuery).RemoteSafe().Describe("answers a DNS query"))
}

// fakeDNSQuery answers as dns/query does: example.com A with TTL 300,
// two.example with TTLs 300 and 30, nx.example NXDOMAIN with a SOA (TTL
// 3600, MINIMUM 120), empty.example with no record, whoami.example a TXT
// naming the caller.
func fakeDNSQuery(_ context.Context, c *sdk.Call, in dohMessage) (dohMessage, error) {
	wire, err := base64.StdEncoding.DecodeString(in.Message)
	var q dns.Msg
	if err == nil {
		err = q.Unpack(wire)
	}
	if err == nil && len(q.Question) != 1 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return dohMessage{}, sdk.Errorf(sdk.CodeInvalidInput, "message: not a DNS message: %v", err)
	}
	m := new(dns.Msg)
	m.SetReply(&q)
	hdr := func(name string, t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	name := q.Question[0].Name
	switch name {
	case "example.com.":
		m.Answer = []dns.RR{&dns.A{Hdr: hdr(name, dns.TypeA, 300), A: net.IPv4(192, 0, 2, 1)}}
	case "two.example.":
		m.Answer = []dns.RR{&dns.A{Hdr: hdr(name, dns.TypeA, 300), A: net.IPv4(192, 0, 2, 1)},
			&dns.A{Hdr: hdr(name, dns.TypeA, 30), A: net.IPv4(192, 0, 2, 2)}}
	case "nx.example.":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{&dns.SOA{Hdr: hdr("example.", dns.TypeSOA, 3600), Ns: "ns.example.", Mbox: "admin.example.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 120}}
	case "whoami.example.":
		who := "anonymous"
		if c.Identity != nil {
			who = c.Identity.ID
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: hdr(name, dns.TypeTXT, 0), Txt: []string{who}}}
	}
	out, err := m.Pack()
	if err != nil {
		return dohMessage{}, err
	}
	return dohMessage{Message: base64.StdEncoding.EncodeToString(out)}, nil
}

func dohQuery(t *testing.T, name string, qtype uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0 // RFC 8484 §4.1: cache friendly
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dohGet(n *oaNode, query []byte, token string) *http.Request {
	return n.request(http.MethodGet, "/dns-query?dns="+base64.RawURLEncoding.EncodeToString(query), token, "")
}

func dohPost(n *oaNode, body, ctype, token string) *http.Request {
	req := n.request(http.MethodPost, "/dns-query", token, body)
	req.Header.Set("Content-Type", ctype)
	return req
}

// dohAnswer sends req, checks the answer is a 200 DNS message and
// decodes it; it returns the message and Cache-Control.
func dohAnswer(t *testing.T, n *oaNode, req *http.Request) (*dns.Msg, string) {
	t.Helper()
	resp, body := n.send(req)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/dns-message" {
		t.Fatalf("%d %s: %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var m dns.Msg
	if err := m.Unpack(body); err != nil {
		t.Fatalf("the answer does not parse: %v", err)
	}
	return &m, resp.Header.Get("Cache-Control")
}

func TestDoHGetAndPost(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, nil)
	q := dohQuery(t, "example.com.", dns.TypeA)
	for _, req := range []*http.Request{
		dohGet(n, q, ""),
		dohPost(n, string(q), "application/dns-message", ""),
		dohPost(n, string(q), "Application/DNS-Message; charset=binary", ""),
		// Padding is not RFC 8484's, but forgiven.
		n.request(http.MethodGet, "/dns-query?dns="+base64.URLEncoding.EncodeToString(q), "", ""),
	} {
		m, cc := dohAnswer(t, n, req)
		if cc != "max-age=300" {
			t.Errorf("%s: Cache-Control %q, want max-age=300", req.Method, cc)
		}
		if m.Id != 0 || !m.Response || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("%s: answer %v", req.Method, m)
		}
		if a, ok := m.Answer[0].(*dns.A); !ok || !a.A.Equal(net.IPv4(192, 0, 2, 1)) || a.Hdr.Ttl != 300 {
			t.Errorf("%s: answer record %v", req.Method, m.Answer[0])
		}
	}
}

func TestDoHCacheControl(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, nil)
	for name, want := range map[string]string{
		"example.com.":   "max-age=300",
		"two.example.":   "max-age=30",  // the smallest TTL
		"nx.example.":    "max-age=120", // the SOA's MINIMUM, below its TTL
		"empty.example.": "max-age=0",   // no record
	} {
		m, cc := dohAnswer(t, n, dohGet(n, dohQuery(t, name, dns.TypeA), ""))
		if cc != want {
			t.Errorf("%s: Cache-Control %q, want %q", name, cc, want)
		}
		if name == "nx.example." && m.Rcode != dns.RcodeNameError {
			t.Errorf("%s: rcode %s", name, dns.RcodeToString[m.Rcode])
		}
	}
}

func TestDoHCaller(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, nil)
	q := dohQuery(t, "whoami.example.", dns.TypeTXT)
	for token, want := range map[string]string{"": "anonymous", oaTokenPlain: "plain", oaTokenCaps: "capper"} {
		m, _ := dohAnswer(t, n, dohPost(n, string(q), "application/dns-message", token))
		if len(m.Answer) != 1 || strings.Join(m.Answer[0].(*dns.TXT).Txt, "") != want {
			t.Errorf("token %q: %v, want %s", token, m.Answer, want)
		}
	}
	resp, b := n.send(dohGet(n, q, "not-a-token"))
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("a token the node does not accept: %d %s", resp.StatusCode, b)
	}
}

func TestDoHRefusals(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, map[string]any{"max_body_bytes": "1MiB"})
	q := string(dohQuery(t, "example.com.", dns.TypeA))
	big := strings.Repeat("x", 65536)
	streamed := dohPost(n, big, "application/dns-message", "")
	streamed.Body = io.NopCloser(strings.NewReader(big))
	streamed.ContentLength = -1 // chunked: the limit is met while reading
	for _, c := range []struct {
		name   string
		req    *http.Request
		status int
		text   string
	}{
		{"no dns parameter", n.request(http.MethodGet, "/dns-query", "", ""), 400, "no query"},
		{"empty dns parameter", n.request(http.MethodGet, "/dns-query?dns=", "", ""), 400, "no query"},
		{"not base64url", n.request(http.MethodGet, "/dns-query?dns=a%2Bb/c", "", ""), 400, "not base64url"},
		{"not a DNS message", dohGet(n, []byte("hello"), ""), 400, "invalid query: message: not a DNS message"},
		{"empty body", dohPost(n, "", "application/dns-message", ""), 400, "empty"},
		{"JSON", dohPost(n, q, "application/json", ""), 415, "application/dns-message"},
		{"no content type", dohPost(n, q, "", ""), 415, "application/dns-message"},
		{"too large", dohPost(n, big, "application/dns-message", ""), 413, "65535"},
		{"too large, chunked", streamed, 413, "65535"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := n.send(c.req)
			if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(b), c.text) {
				t.Fatalf("%d %s %q, want %d text/plain containing %q", resp.StatusCode, resp.Header.Get("Content-Type"), b, c.status, c.text)
			}
		})
	}
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodHead} {
		resp, b := n.send(n.request(method, "/dns-query", "", ""))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST" {
			t.Errorf("%s: %d Allow %q %s", method, resp.StatusCode, resp.Header.Get("Allow"), b)
		}
	}
}

func TestDoHWithoutDNSService(t *testing.T) {
	n := startNode(t, &httpplugin.Plugin{}, nil)
	resp, b := n.send(dohGet(n, dohQuery(t, "example.com.", dns.TypeA), ""))
	if resp.StatusCode != http.StatusNotFound || string(b) != "no DNS service on this node\n" {
		t.Fatalf("no dns/query on the node: %d %q", resp.StatusCode, b)
	}
	doc, _ := n.document("")
	if oaPaths(doc)["/dns-query"] != nil {
		t.Error("the document lists /dns-query on a node without dns/query")
	}
}

func TestDoHSetting(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, map[string]any{"doh": false})
	resp, b := n.send(dohGet(n, dohQuery(t, "example.com.", dns.TypeA), ""))
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "DNS") {
		t.Fatalf("doh = false: %d %q, want the decoy's 404", resp.StatusCode, b)
	}
	doc, _ := n.document("")
	if oaPaths(doc)["/dns-query"] != nil {
		t.Error("the document lists /dns-query with doh = false")
	}
}

func TestDoHDocumented(t *testing.T) {
	n := startNode(t, dohPlugin{&httpplugin.Plugin{}}, nil)
	doc, v := n.document("")
	for _, method := range []string{"get", "post"} {
		if dig(oaPaths(doc), "/dns-query", method, "operationId") == nil {
			t.Fatalf("the document has no %s /dns-query: %v", method, oaPaths(doc)["/dns-query"])
		}
	}
	q := dohQuery(t, "example.com.", dns.TypeA)
	for _, req := range []*http.Request{
		dohGet(n, q, ""),
		dohPost(n, string(q), "application/dns-message", ""),
		n.request(http.MethodGet, "/dns-query?dns=a%2Bb/c", "", ""),
	} {
		resp, b := n.send(req)
		if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
			t.Errorf("%s %s: the answer (%d %q) does not match the document:\n%s", req.Method, req.URL, resp.StatusCode, b, oaErrors(errs))
		}
	}
}
