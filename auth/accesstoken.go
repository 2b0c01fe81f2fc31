package auth

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// AccessToken is a Twilio Access Token to mint: a JWT signed with an API
// key's secret, header {alg HS256, typ JWT, cty twilio-fpa;v=1[, twr]}.
// Sign writes header and claims in twilio-node's key order, so a token minted
// from the same inputs at the same second is byte-identical to twilio-node's
// (except for strings holding U+2028 or U+2029, which Go's JSON escapes and
// JSON.stringify does not; verifiers check the bytes, so both are valid).
type AccessToken struct {
	// AccountSid (AC…) becomes "sub".
	AccountSid string
	// KeySid (SK…) is the API key whose secret signs; it becomes "iss" and
	// the prefix of "jti".
	KeySid string
	// Identity goes in grants.identity when non-empty. With a Voice grant it
	// must be only alphanumerics and underscore.
	Identity string
	// Region, when set, goes in the header as "twr" (such as "ie1").
	Region string
	// TTL is the lifetime from now, whole seconds, 1 s to 24 h; 0 means 1 h.
	TTL time.Duration
	// NotBefore, when non-zero, becomes "nbf" (whole seconds).
	NotBefore time.Time
	// Grants are the product permissions.
	Grants Grants
}

// accessHeader is the header in twilio-node's key order.
type accessHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Cty string `json:"cty"`
	Twr string `json:"twr,omitempty"`
}

// accessPayload is the payload in twilio-node's key order.
type accessPayload struct {
	Jti    string     `json:"jti"`
	Grants grantsWire `json:"grants"`
	Nbf    int64      `json:"nbf,omitempty"`
	Iat    int64      `json:"iat"`
	Exp    int64      `json:"exp"`
	Iss    string     `json:"iss"`
	Sub    string     `json:"sub"`
}

// Sign mints the token at now with the API key's secret. It refuses (with a
// *TokenError carrying the code a verifier would give) SIDs of the wrong
// form, an empty secret, a TTL over 24 h, a NotBefore at or after expiry, a
// Voice grant with an identity other than alphanumerics and underscore, and a
// Player grant that is not a JSON object.
func (t AccessToken) Sign(secret []byte, now time.Time) (string, error) {
	if !validSid(t.KeySid, "SK") || !validSid(t.AccountSid, "AC") {
		return "", tokenErr(CodeTokenIssuer, "need an SK… key SID and an AC… account SID")
	}
	if len(secret) == 0 {
		return "", tokenErr(CodeTokenAuth, "empty key secret")
	}
	if t.Region != "" && !validRegion(t.Region) {
		return "", tokenErr(CodeTokenHeader, "region must be lowercase letters, digits and '-'")
	}
	iat, exp, terr := mintTimes(t.TTL, now)
	if terr != nil {
		return "", terr
	}
	var nbf int64
	if !t.NotBefore.IsZero() {
		nbf = t.NotBefore.Unix()
		if nbf >= exp {
			return "", tokenErr(CodeTokenNotYetValid, "not-before is at or after expiry")
		}
	}
	if !utf8.ValidString(t.Identity) {
		return "", tokenErr(CodeTokenGrants, "identity is not UTF-8")
	}
	if err := t.Grants.check(t.Identity); err != nil {
		return "", err
	}
	h, err := marshalJSON(accessHeader{Alg: jwtAlg, Typ: jwtTyp, Cty: accessCty, Twr: t.Region})
	if err != nil {
		return "", err
	}
	p, err := marshalJSON(accessPayload{
		Jti:    t.KeySid + "-" + strconv.FormatInt(iat, 10),
		Grants: grantsWire{Identity: t.Identity, Grants: t.Grants},
		Nbf:    nbf,
		Iat:    iat,
		Exp:    exp,
		Iss:    t.KeySid,
		Sub:    t.AccountSid,
	})
	if err != nil {
		return "", &TokenError{Code: CodeTokenGrants, Message: tokenMessages[CodeTokenGrants], Err: err}
	}
	return signHS256(h, p, secret)
}

// check refuses grants Twilio would refuse (20106).
func (g *Grants) check(identity string) *TokenError {
	if g.Voice != nil && !validClientName(identity) {
		return tokenErr(CodeTokenGrants, "a voice grant needs an identity of only alphanumerics and underscore")
	}
	if len(g.Player) > 0 && (!json.Valid(g.Player) || !isObject(g.Player)) {
		return tokenErr(CodeTokenGrants, "player grant must be a JSON object")
	}
	if g.NTS != nil && g.NTS.TTL != 0 && (g.NTS.TTL < time.Second || g.NTS.TTL > MaxNTSGrantTTL) {
		return tokenErr(CodeTokenGrants, errBadNTSTTL.Error())
	}
	return nil
}

func validRegion(s string) bool {
	if len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// KeyLookup finds an API key for the verifier: the account it belongs to and
// its secret. Any error (unknown or deleted key, suspended account) refuses
// the token with 20151 and is kept as the TokenError's Err.
type KeyLookup func(keySid string) (accountSid string, secret []byte, err error)

// AccessClaims is what a verified Access Token says.
type AccessClaims struct {
	// ID is "jti" (empty when absent).
	ID string
	// AccountSid is "sub"; KeySid is "iss".
	AccountSid, KeySid string
	// Identity is grants.identity (empty when absent, as twilio-go omits it).
	Identity string
	// Region is the header's "twr" (empty when absent).
	Region string
	// IssuedAt and NotBefore are zero when the claim is absent (twilio-go
	// writes no iat, twilio-node no nbf unless asked).
	IssuedAt, NotBefore time.Time
	// ExpiresAt is "exp".
	ExpiresAt time.Time
	// Grants are the product grants; unknown grant keys are dropped.
	Grants Grants
	// NTSTTL is the NTS grant's cap on TURN credential lifetime, 0 for none.
	NTSTTL time.Duration
}

// VerifyAccessToken checks token at now and returns its claims. It checks the
// HMAC over the bytes received (key order and escaping are the minter's
// business), so it accepts what twilio-go and twilio-node emit, with iat or
// nbf absent. Every refusal is a *TokenError: 20101 malformed, 20102/20160
// header (alg must be HS256, typ JWT, cty twilio-fpa;v=1), 20103 iss/sub not
// SK…/AC…, 20151 lookup failed or the key is not sub's, 20107 bad signature,
// 20105 nbf/iat in the future, 20104 expired, 20157 exp more than 24 h after
// issue, 20106 bad grants. The clock skew tolerated is TokenClockSkew.
func VerifyAccessToken(token string, lookup KeyLookup, now time.Time) (*AccessClaims, error) {
	r, pb, terr := splitJWT(token)
	if terr != nil {
		return nil, terr
	}
	if terr := r.checkAlgTyp(); terr != nil {
		return nil, terr
	}
	if cty, ok := r.headerString("cty"); !ok || cty != accessCty {
		return nil, tokenErr(CodeTokenHeaderFields, "cty must be twilio-fpa;v=1")
	}
	c := &AccessClaims{}
	if raw, ok := r.header["twr"]; ok {
		if c.Region, ok = rawString(raw); !ok {
			return nil, tokenErr(CodeTokenHeader, "twr is not a string")
		}
	}
	if terr := r.decodePayload(pb); terr != nil {
		return nil, terr
	}
	iss, _, _ := r.claimString("iss")
	sub, _, _ := r.claimString("sub")
	if !validSid(iss, "SK") || !validSid(sub, "AC") {
		return nil, tokenErr(CodeTokenIssuer, "iss must be an SK… key SID and sub an AC… account SID")
	}
	if lookup == nil {
		return nil, tokenErr(CodeTokenAuth, "no key lookup")
	}
	account, secret, err := lookup(iss)
	if err != nil {
		return nil, &TokenError{Code: CodeTokenAuth, Message: tokenMessages[CodeTokenAuth], Detail: "key lookup", Err: err}
	}
	if account != sub {
		return nil, tokenErr(CodeTokenAuth, "the key does not belong to the account")
	}
	if len(secret) == 0 {
		return nil, tokenErr(CodeTokenAuth, "the key has no secret")
	}
	if terr := r.checkSignature(secret); terr != nil {
		return nil, terr
	}
	// From here the payload is authentic.
	if c.ID, _, terr = r.claimString("jti"); terr != nil {
		return nil, terr
	}
	if c.IssuedAt, c.NotBefore, c.ExpiresAt, terr = r.checkTimes(now); terr != nil {
		return nil, terr
	}
	raw, ok := r.payload["grants"]
	if !ok {
		return nil, tokenErr(CodeTokenGrants, "no grants")
	}
	c.Identity, c.Grants, err = decodeGrants(raw)
	if err != nil {
		return nil, &TokenError{Code: CodeTokenGrants, Message: tokenMessages[CodeTokenGrants], Err: err}
	}
	if c.Grants.Voice != nil && !validClientName(c.Identity) {
		return nil, tokenErr(CodeTokenGrants, "a voice grant needs an identity of only alphanumerics and underscore")
	}
	c.AccountSid, c.KeySid = sub, iss
	if c.Grants.NTS != nil {
		c.NTSTTL = c.Grants.NTS.TTL
	}
	return c, nil
}

// TURNTTL returns the lifetime a TURN credential minted for this token may
// have: requested, capped by the NTS grant's TTL when it has one.
func (c *AccessClaims) TURNTTL(requested time.Duration) time.Duration {
	if c.NTSTTL > 0 && requested > c.NTSTTL {
		return c.NTSTTL
	}
	return requested
}
