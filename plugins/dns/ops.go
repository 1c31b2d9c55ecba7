package dnsplugin

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"alknet.dev/alknet/plugins/dns/pkarr"
	"alknet.dev/alknet/plugins/sdk"
)

// Error codes of dns/publish besides the standard ones.
const (
	CodePacketRefused sdk.Code = "PACKET_REFUSED"
	CodeSignedOff     sdk.Code = "SIGNED_RECORDS_OFF"
)

// QueryInput is the input of dns/query: a DNS query in wire format,
// standard base64.
type QueryInput struct {
	Message string `json:"message" jsonschema:"a DNS query in wire format, standard base64"`
}

// QueryOutput is the answer, in wire format, standard base64.
type QueryOutput struct {
	Message string `json:"message" jsonschema:"the DNS answer in wire format, standard base64"`
}

// PublishInput is the input of dns/publish.
type PublishInput struct {
	Packet string `json:"packet" jsonschema:"a signed packet (public key, signature, timestamp, DNS records), standard base64"`
}

// PublishOutput says what became of a published packet.
type PublishOutput struct {
	// Name is where the records are served.
	Name      string `json:"name"`
	Timestamp uint64 `json:"timestamp"`
	// Stored is false when this node had the packet already (then it is
	// not sent to the peers again).
	Stored bool         `json:"stored"`
	Peers  []PeerResult `json:"peers"`
}

// Stats is the output of dns/stats: counters, never names.
type Stats struct {
	QueriesDoQ          int64 `json:"queries_doq"`
	QueriesDoT          int64 `json:"queries_dot"`
	QueriesCall         int64 `json:"queries_call"`
	QueriesUDP          int64 `json:"queries_udp"`
	QueriesTCP          int64 `json:"queries_tcp"`
	NoError             int64 `json:"noerror"`
	NXDomain            int64 `json:"nxdomain"`
	Refused             int64 `json:"refused"`
	ServFail            int64 `json:"servfail"`
	FormErr             int64 `json:"formerr"`
	OtherRcode          int64 `json:"other_rcode"`
	Forwarded           int64 `json:"forwarded"`
	ForwardErrors       int64 `json:"forward_errors"`
	TransfersRefused    int64 `json:"transfers_refused"`
	ProtocolErrors      int64 `json:"protocol_errors"`
	SignedKeys          int   `json:"signed_keys"`
	Published           int64 `json:"published"`
	PublishRefused      int64 `json:"publish_refused"`
	Replicated          int64 `json:"replicated"`
	ReplicationFailed   int64 `json:"replication_failed"`
	ReplicationReceived int64 `json:"replication_received"`
	// Classic is the classic listener's counters (absent when it is off).
	Classic *ClassicStats `json:"classic,omitempty"`
}

// Operations are the DNS plugin's operations.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query("dns/query", p.queryOp).RemoteSafe().
			Describe("answers a DNS query (wire format, base64) as DoQ and DoT do; the HTTP plugin's /dns-query (DoH) calls it as its caller"),
		sdk.Mutation("dns/publish", p.publishOp).RequireAnyScope(ScopePublish, "admin").
			Describe("stores a signed packet (pkarr format) if it verifies and is newer than the key's, serves its records under <key>.<signed_zone> and sends it to the configured peers").
			Errors(sdk.ErrorSpec{Code: CodePacketRefused, Description: "the packet does not verify, is too large, or is older than the key's packet on this node", HTTPStatus: 422},
				sdk.ErrorSpec{Code: CodeSignedOff, Description: "this node serves no signed records (no signed_zone)", HTTPStatus: 409}),
		sdk.Query("dns/stats", p.statsOp).RemoteSafe().Describe("query, answer and publication counters (never names)"),
	}
}

func (p *Plugin) queryOp(ctx context.Context, c *sdk.Call, in QueryInput) (QueryOutput, error) {
	if p.cfg.Load() == nil {
		return QueryOutput{}, errNotConfigured
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(in.Message))
	if err != nil {
		return QueryOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "message: not standard base64: %v", err)
	}
	if len(b) > maxMessage {
		return QueryOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "message: %d bytes, a DNS message has at most %d", len(b), maxMessage)
	}
	req, err := unpackQuery(b)
	if err != nil {
		return QueryOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "message: %v", err)
	}
	m := p.answer(ctx, req, source{transport: "call", identity: c.Identity})
	m.Compress = true
	out, err := m.Pack()
	if err != nil {
		return QueryOutput{}, err
	}
	return QueryOutput{Message: base64.StdEncoding.EncodeToString(out)}, nil
}

func (p *Plugin) publishOp(ctx context.Context, c *sdk.Call, in PublishInput) (PublishOutput, error) {
	cfg := p.cfg.Load()
	if cfg == nil {
		return PublishOutput{}, errNotConfigured
	}
	if cfg.signedZone == "" {
		return PublishOutput{}, sdk.Errorf(CodeSignedOff, "this node serves no signed records: set signed_zone in [plugins.dns]")
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(in.Packet))
	if err != nil {
		return PublishOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "packet: not standard base64: %v", err)
	}
	stored, err := p.accept(b, idOf(c.Identity), "dns/publish")
	if err != nil {
		if isPacketError(err) {
			return PublishOutput{}, sdk.Errorf(CodePacketRefused, "%v", err)
		}
		return PublishOutput{}, err
	}
	pkt := p.signed.get(keyOf(b))
	if pkt == nil {
		return PublishOutput{}, errors.New("signed packet vanished after it was stored")
	}
	out := PublishOutput{Name: pkt.Name() + "." + cfg.signedZone, Timestamp: pkt.Timestamp, Stored: stored, Peers: []PeerResult{}}
	if stored && len(cfg.peers) > 0 {
		out.Peers = p.replicate(ctx, c, cfg.peers, pkt)
	}
	return out, nil
}

// keyOf is the z-base-32 name of a verified packet's key.
func keyOf(b []byte) string {
	if len(b) < 32 {
		return ""
	}
	return pkarr.EncodeZBase32(b[:32])
}

func (p *Plugin) statsOp(context.Context, *sdk.Call, struct{}) (Stats, error) {
	s := &p.stats
	out := Stats{QueriesDoQ: s.doq.Load(), QueriesDoT: s.dot.Load(), QueriesCall: s.call.Load(), QueriesUDP: s.udp.Load(), QueriesTCP: s.tcp.Load(),
		NoError: s.noError.Load(), NXDomain: s.nxDomain.Load(), Refused: s.refused.Load(), ServFail: s.servFail.Load(),
		FormErr: s.formErr.Load(), OtherRcode: s.otherRcode.Load(), Forwarded: s.forwarded.Load(), ForwardErrors: s.forwardErrors.Load(),
		TransfersRefused: s.transfersRefused.Load(), ProtocolErrors: s.protocolErrors.Load(),
		Published: s.published.Load(), PublishRefused: s.publishRefused.Load(), Replicated: s.replicated.Load(),
		ReplicationFailed: s.replicationFailed.Load(), ReplicationReceived: s.replicationReceived.Load()}
	if p.signed != nil {
		out.SignedKeys = p.signed.len()
	}
	if c := p.classic.Load(); c != nil {
		st := c.Stats()
		out.Classic = &st
	}
	return out, nil
}
