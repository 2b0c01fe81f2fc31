package auth

import (
	"errors"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// CapabilityToken is a Twilio Client Capability Token to mint: a JWT signed
// with the account's auth token, header {"alg":"HS256","typ":"JWT"}, payload
// {scope, iss, exp, iat}. Sign is byte-identical to twilio-node's
// ClientCapability for the same inputs and second.
type CapabilityToken struct {
	// AccountSid (AC…) becomes "iss".
	AccountSid string
	// TTL is the lifetime from now, whole seconds, 1 s to 24 h; 0 means 1 h.
	TTL time.Duration
	// Scopes are written in order, separated by single spaces.
	Scopes []Scope
	// LaxClientNames mints any client name, escaped, as twilio-node does.
	// By default a client name must be only alphanumerics and underscore, as
	// Twilio documents.
	LaxClientNames bool
}

// Scope is one capability scope: IncomingClientScope, OutgoingClientScope,
// EventStreamScope, or (from a verified token) RawScope.
type Scope interface {
	// String is the scope as written in the token,
	// "scope:<service>:<privilege>?<params>".
	String() string
	check(lax bool) error
}

// Param is one name/value pair of a scope's appParams; order is kept.
type Param struct {
	Name, Value string
}

// IncomingClientScope lets the client receive calls as ClientName.
type IncomingClientScope struct {
	ClientName string
}

// String implements Scope: scope:client:incoming?clientName=<esc>.
func (s IncomingClientScope) String() string {
	return "scope:client:incoming?clientName=" + EncodeURIComponent(s.ClientName)
}

func (s IncomingClientScope) check(lax bool) error { return checkClientName(s.ClientName, lax, true) }

// OutgoingClientScope lets the client call through the TwiML application
// ApplicationSid, optionally as ClientName and with Params passed to it.
type OutgoingClientScope struct {
	ApplicationSid string
	ClientName     string
	Params         []Param
}

// String implements Scope:
// scope:client:outgoing?appSid=<esc>[&clientName=<esc>][&appParams=<esc(k=v&…)>].
func (s OutgoingClientScope) String() string {
	var b strings.Builder
	b.WriteString("scope:client:outgoing?appSid=")
	b.WriteString(EncodeURIComponent(s.ApplicationSid))
	if s.ClientName != "" {
		b.WriteString("&clientName=")
		b.WriteString(EncodeURIComponent(s.ClientName))
	}
	if len(s.Params) > 0 {
		b.WriteString("&appParams=")
		b.WriteString(EncodeURIComponent(joinParams(s.Params)))
	}
	return b.String()
}

func (s OutgoingClientScope) check(lax bool) error {
	if s.ApplicationSid == "" || !utf8.ValidString(s.ApplicationSid) {
		return errors.New("outgoing scope needs an application SID")
	}
	if err := checkClientName(s.ClientName, lax, false); err != nil {
		return err
	}
	return checkParams(s.Params)
}

// EventStreamPath is the only path of an event stream scope.
const EventStreamPath = "/2010-04-01/Events"

// EventStreamScope lets the client subscribe to the account's event stream,
// optionally filtered.
type EventStreamScope struct {
	Filters []Param
}

// String implements Scope:
// scope:stream:subscribe?path=/2010-04-01/Events[&appParams=<esc(k=v&…)>].
func (s EventStreamScope) String() string {
	out := "scope:stream:subscribe?path=" + EventStreamPath
	if len(s.Filters) > 0 {
		out += "&appParams=" + EncodeURIComponent(joinParams(s.Filters))
	}
	return out
}

func (s EventStreamScope) check(bool) error { return checkParams(s.Filters) }

// RawScope is a scope the verifier does not know, kept verbatim.
type RawScope string

// String implements Scope.
func (s RawScope) String() string { return string(s) }

func (s RawScope) check(bool) error {
	if !strings.HasPrefix(string(s), "scope:") || strings.ContainsAny(string(s), " \t\r\n") || !utf8.ValidString(string(s)) {
		return errors.New("raw scope must start with scope: and have no spaces")
	}
	return nil
}

func checkClientName(name string, lax, required bool) error {
	switch {
	case name == "" && required:
		return errors.New("client name required")
	case name == "":
		return nil
	case lax && utf8.ValidString(name):
		return nil
	case !lax && validClientName(name):
		return nil
	}
	return errors.New("client name must be only alphanumerics and underscore")
}

func checkParams(ps []Param) error {
	for _, p := range ps {
		if !utf8.ValidString(p.Name) || !utf8.ValidString(p.Value) {
			return errors.New("parameters must be UTF-8")
		}
	}
	return nil
}

// joinParams is twilio-node's Object.entries(params).map(esc(k)=esc(v)).join("&").
func joinParams(ps []Param) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(EncodeURIComponent(p.Name))
		b.WriteByte('=')
		b.WriteString(EncodeURIComponent(p.Value))
	}
	return b.String()
}

// EncodeURIComponent escapes s as JavaScript's encodeURIComponent does:
// every UTF-8 byte but A-Z a-z 0-9 - _ . ! ~ * ' ( ) becomes %XX (uppercase).
func EncodeURIComponent(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !uriUnreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if uriUnreserved(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

func uriUnreserved(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-_.!~*'()", c) >= 0
}

// capabilityHeader is {"alg":"HS256","typ":"JWT"}.
type capabilityHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
}

// capabilityPayload is the payload in twilio-node's (jsonwebtoken's) order.
type capabilityPayload struct {
	Scope string `json:"scope"`
	Iss   string `json:"iss"`
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
}

// Sign mints the token at now with the account's auth token. Refusals are
// *TokenError: 20103 bad account SID, 20151 empty auth token, 20157 TTL over
// 24 h, 20106 no scope or a bad one.
func (t CapabilityToken) Sign(authToken []byte, now time.Time) (string, error) {
	if !validSid(t.AccountSid, "AC") {
		return "", tokenErr(CodeTokenIssuer, "need an AC… account SID")
	}
	if len(authToken) == 0 {
		return "", tokenErr(CodeTokenAuth, "empty auth token")
	}
	iat, exp, terr := mintTimes(t.TTL, now)
	if terr != nil {
		return "", terr
	}
	if len(t.Scopes) == 0 {
		return "", tokenErr(CodeTokenGrants, "no scope")
	}
	parts := make([]string, len(t.Scopes))
	for i, s := range t.Scopes {
		if s == nil {
			return "", tokenErr(CodeTokenGrants, "nil scope")
		}
		if err := s.check(t.LaxClientNames); err != nil {
			return "", &TokenError{Code: CodeTokenGrants, Message: tokenMessages[CodeTokenGrants], Err: err}
		}
		parts[i] = s.String()
	}
	h, err := marshalJSON(capabilityHeader{Alg: jwtAlg, Typ: jwtTyp})
	if err != nil {
		return "", err
	}
	p, err := marshalJSON(capabilityPayload{Scope: strings.Join(parts, " "), Iss: t.AccountSid, Exp: exp, Iat: iat})
	if err != nil {
		return "", err
	}
	return signHS256(h, p, authToken)
}

// AuthTokenLookup finds an account's auth token for the verifier. Any error
// (unknown or suspended account) refuses the token with 20151.
type AuthTokenLookup func(accountSid string) (authToken []byte, err error)

// CapabilityClaims is what a verified Capability Token says.
type CapabilityClaims struct {
	// AccountSid is "iss".
	AccountSid string
	// IssuedAt is zero when "iat" is absent.
	IssuedAt time.Time
	// ExpiresAt is "exp".
	ExpiresAt time.Time
	// Scopes in token order; unknown ones are RawScope.
	Scopes []Scope
}

// Incoming returns the first incoming-client scope.
func (c *CapabilityClaims) Incoming() (IncomingClientScope, bool) {
	for _, s := range c.Scopes {
		if v, ok := s.(IncomingClientScope); ok {
			return v, true
		}
	}
	return IncomingClientScope{}, false
}

// Outgoing returns the first outgoing-client scope.
func (c *CapabilityClaims) Outgoing() (OutgoingClientScope, bool) {
	for _, s := range c.Scopes {
		if v, ok := s.(OutgoingClientScope); ok {
			return v, true
		}
	}
	return OutgoingClientScope{}, false
}

// VerifyCapabilityToken checks a Capability Token at now and returns its
// claims, with the Access Token codes: 20101 malformed, 20102/20160 header
// (alg HS256, typ JWT), 20103 iss not AC…, 20151 lookup failed, 20107 bad
// signature, 20105 nbf/iat in the future, 20104 expired, 20157 exp more than
// 24 h after issue, 20106 scope missing or unparsable. Client names are read
// as written (twilio-node mints any name).
func VerifyCapabilityToken(token string, lookup AuthTokenLookup, now time.Time) (*CapabilityClaims, error) {
	r, pb, terr := splitJWT(token)
	if terr != nil {
		return nil, terr
	}
	if terr := r.checkAlgTyp(); terr != nil {
		return nil, terr
	}
	if terr := r.decodePayload(pb); terr != nil {
		return nil, terr
	}
	iss, _, _ := r.claimString("iss")
	if !validSid(iss, "AC") {
		return nil, tokenErr(CodeTokenIssuer, "iss must be an AC… account SID")
	}
	if lookup == nil {
		return nil, tokenErr(CodeTokenAuth, "no auth token lookup")
	}
	secret, err := lookup(iss)
	if err != nil {
		return nil, &TokenError{Code: CodeTokenAuth, Message: tokenMessages[CodeTokenAuth], Detail: "auth token lookup", Err: err}
	}
	if len(secret) == 0 {
		return nil, tokenErr(CodeTokenAuth, "the account has no auth token")
	}
	if terr := r.checkSignature(secret); terr != nil {
		return nil, terr
	}
	c := &CapabilityClaims{AccountSid: iss}
	if c.IssuedAt, _, c.ExpiresAt, terr = r.checkTimes(now); terr != nil {
		return nil, terr
	}
	scope, present, terr := r.claimString("scope")
	if !present || terr != nil {
		return nil, tokenErr(CodeTokenGrants, "scope missing or not a string")
	}
	if c.Scopes, err = ParseScopes(scope); err != nil {
		return nil, &TokenError{Code: CodeTokenGrants, Message: tokenMessages[CodeTokenGrants], Err: err}
	}
	return c, nil
}

// ParseScopes reads a "scope" claim: scopes separated by spaces. Scopes it
// does not know are returned as RawScope; a known one that is malformed
// (missing parameter, bad escaping) is an error.
func ParseScopes(scope string) ([]Scope, error) {
	var out []Scope
	for _, s := range strings.Split(scope, " ") {
		if s == "" {
			continue
		}
		sc, err := parseScope(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	if len(out) == 0 {
		return nil, errors.New("no scope")
	}
	return out, nil
}

func parseScope(s string) (Scope, error) {
	name, query, _ := strings.Cut(s, "?")
	switch name {
	case "scope:client:incoming", "scope:client:outgoing", "scope:stream:subscribe":
	default:
		return RawScope(s), nil
	}
	params, err := parseQuery(query)
	if err != nil {
		return nil, errors.New(name + ": " + err.Error())
	}
	switch name {
	case "scope:client:incoming":
		cn, ok := lookupParam(params, "clientName")
		if !ok || cn == "" {
			return nil, errors.New(name + ": no clientName")
		}
		return IncomingClientScope{ClientName: cn}, nil
	case "scope:client:outgoing":
		app, ok := lookupParam(params, "appSid")
		if !ok || app == "" {
			return nil, errors.New(name + ": no appSid")
		}
		o := OutgoingClientScope{ApplicationSid: app}
		o.ClientName, _ = lookupParam(params, "clientName")
		if ap, ok := lookupParam(params, "appParams"); ok {
			if o.Params, err = parseQuery(ap); err != nil {
				return nil, errors.New(name + ": appParams: " + err.Error())
			}
		}
		return o, nil
	default: // scope:stream:subscribe
		if p, _ := lookupParam(params, "path"); p != EventStreamPath {
			return nil, errors.New(name + ": path must be " + EventStreamPath)
		}
		var e EventStreamScope
		if ap, ok := lookupParam(params, "appParams"); ok {
			if e.Filters, err = parseQuery(ap); err != nil {
				return nil, errors.New(name + ": appParams: " + err.Error())
			}
		}
		return e, nil
	}
}

// parseQuery splits k=v&k=v, undoing EncodeURIComponent on each part ("+"
// stays "+"). An empty query has no parameters.
func parseQuery(q string) ([]Param, error) {
	if q == "" {
		return nil, nil
	}
	var out []Param
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, errors.New("bad escaping")
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, errors.New("bad escaping")
		}
		out = append(out, Param{Name: dk, Value: dv})
	}
	return out, nil
}

func lookupParam(ps []Param, name string) (string, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}
