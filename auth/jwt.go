package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Limits shared by Access Tokens and Capability Tokens.
const (
	// MaxTokenLifetime is the longest a token may live: Twilio refuses an exp
	// more than 24 h after issue (20157), and minting refuses a longer TTL.
	MaxTokenLifetime = 24 * time.Hour
	// DefaultTokenTTL is the lifetime of a token minted with TTL 0 (Twilio's
	// helper libraries default to one hour).
	DefaultTokenTTL = time.Hour
	// TokenClockSkew is how far the verifier tolerates the minter's clock to
	// differ from ours, for exp, nbf and iat.
	TokenClockSkew = 30 * time.Second
	// MaxTokenLen is the longest token the verifiers read; longer is 20101.
	MaxTokenLen = 32 << 10
)

// Header values Twilio requires.
const (
	jwtAlg       = "HS256"
	jwtTyp       = "JWT"
	accessCty    = "twilio-fpa;v=1"
	maxUnixClaim = 253402300799 // 9999-12-31T23:59:59Z
)

// b64 is the JWT segment encoding; Strict refuses non-canonical trailing bits
// so one token has one spelling.
var b64 = base64.RawURLEncoding.Strict()

// marshalJSON encodes v the way JavaScript's JSON.stringify does for the
// values we produce: no HTML escaping of & < >, no trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// signHS256 assembles header.payload.signature with HMAC-SHA256 over the
// first two base64url segments.
func signHS256(header, payload, secret []byte) (string, error) {
	hl, pl := b64.EncodedLen(len(header)), b64.EncodedLen(len(payload))
	buf := make([]byte, hl+1+pl, hl+1+pl+1+b64.EncodedLen(32))
	b64.Encode(buf, header)
	buf[hl] = '.'
	b64.Encode(buf[hl+1:], payload)
	sig, err := jwt.SigningMethodHS256.Sign(string(buf), secret)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}

// rawJWT is a token split and decoded, before its signature is checked.
type rawJWT struct {
	signingInput string // header.payload, exactly as received
	header       map[string]json.RawMessage
	payload      map[string]json.RawMessage
	sigSeg       string
}

// splitJWT splits token into its segments and decodes the header. The payload
// is decoded by decodePayload, after the header has been judged.
func splitJWT(token string) (rawJWT, []byte, *TokenError) {
	var r rawJWT
	if token == "" || len(token) > MaxTokenLen {
		return r, nil, tokenErr(CodeTokenInvalid, "empty or longer than "+strconv.Itoa(MaxTokenLen)+" bytes")
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return r, nil, tokenErr(CodeTokenInvalid, "character outside base64url")
		}
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return r, nil, tokenErr(CodeTokenInvalid, "not three dot-separated segments")
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") || h == "" || p == "" {
		return r, nil, tokenErr(CodeTokenInvalid, "not three dot-separated segments")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return r, nil, tokenErr(CodeTokenHeader, "header is not base64url")
	}
	if err := decodeObject(hb, &r.header); err != nil {
		return r, nil, tokenErr(CodeTokenHeader, "header is not a JSON object")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return r, nil, tokenErr(CodeTokenInvalid, "payload is not base64url")
	}
	r.signingInput = token[:len(h)+1+len(p)]
	r.sigSeg = s
	return r, pb, nil
}

// decodePayload decodes the payload bytes into r.payload.
func (r *rawJWT) decodePayload(pb []byte) *TokenError {
	if err := decodeObject(pb, &r.payload); err != nil {
		return tokenErr(CodeTokenInvalid, "payload is not a JSON object")
	}
	return nil
}

// checkSignature verifies the HS256 signature over the bytes received.
func (r *rawJWT) checkSignature(secret []byte) *TokenError {
	if r.sigSeg == "" {
		return tokenErr(CodeTokenSignature, "no signature")
	}
	sig, err := b64.DecodeString(r.sigSeg)
	if err != nil {
		return tokenErr(CodeTokenInvalid, "signature is not base64url")
	}
	if err := jwt.SigningMethodHS256.Verify(r.signingInput, sig, secret); err != nil {
		return tokenErr(CodeTokenSignature, "")
	}
	return nil
}

// checkAlgTyp requires alg HS256 and typ JWT (20160 otherwise).
func (r *rawJWT) checkAlgTyp() *TokenError {
	alg, ok := r.headerString("alg")
	if !ok || alg != jwtAlg {
		return tokenErr(CodeTokenHeaderFields, "alg must be HS256")
	}
	typ, ok := r.headerString("typ")
	if !ok || typ != jwtTyp {
		return tokenErr(CodeTokenHeaderFields, "typ must be JWT")
	}
	return nil
}

// headerString returns header key as a string; ok is false when it is absent
// or not a string.
func (r *rawJWT) headerString(key string) (string, bool) {
	return rawString(r.header[key])
}

// rawString decodes raw as a JSON string.
func rawString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	// raw comes from a document already validated: without escapes and with
	// valid UTF-8, the string is its inner bytes.
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// claimString returns a payload claim that must be a string when present.
func (r *rawJWT) claimString(key string) (s string, present bool, terr *TokenError) {
	raw, ok := r.payload[key]
	if !ok {
		return "", false, nil
	}
	s, ok = rawString(raw)
	if !ok {
		return "", true, tokenErr(CodeTokenInvalid, key+" is not a string")
	}
	return s, true, nil
}

// claimTime returns a NumericDate claim (RFC 7519 section 2: seconds, may be
// fractional, as twilio-go writes float64). ok is false when absent.
func (r *rawJWT) claimTime(key string) (t time.Time, present bool, valid bool) {
	raw, ok := r.payload[key]
	if !ok {
		return time.Time{}, false, true
	}
	// The document was valid JSON, so a value starting with '-' or a digit is
	// a JSON number, which ParseFloat reads exactly.
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return time.Time{}, true, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f > maxUnixClaim {
		return time.Time{}, true, false
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), true, true
}

// decodeObject decodes data, which must be a JSON object, into m with exact
// (case-sensitive) keys.
func decodeObject(data []byte, m *map[string]json.RawMessage) error {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 || data[0] != '{' {
		return errNotObject
	}
	return json.Unmarshal(data, m)
}

// isObject reports whether raw, a value taken from a valid JSON document, is
// an object.
func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

var errNotObject = errors.New("not a JSON object")

// validSid reports whether s is a Twilio SID with prefix: two letters and 32
// alphanumerics (Twilio uses lowercase hex; we do not insist).
func validSid(s, prefix string) bool {
	if len(s) != 34 || s[:2] != prefix {
		return false
	}
	for i := 2; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// validClientName reports whether s is non-empty and only alphanumerics and
// underscore, as Twilio requires of Voice identities and Client names.
func validClientName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}

// checkTimes applies the verifiers' clock rules: nbf and iat not beyond
// now+skew (20105), exp present and now before exp+skew (20104), and exp no
// more than MaxTokenLifetime after the later of iat and nbf, or after now when
// both are absent (20157).
func (r *rawJWT) checkTimes(now time.Time) (iat, nbf, exp time.Time, terr *TokenError) {
	iat, hasIat, ok := r.claimTime("iat")
	if !ok {
		return iat, nbf, exp, tokenErr(CodeTokenInvalid, "iat is not a NumericDate")
	}
	nbf, hasNbf, ok := r.claimTime("nbf")
	if !ok {
		return iat, nbf, exp, tokenErr(CodeTokenInvalid, "nbf is not a NumericDate")
	}
	exp, hasExp, ok := r.claimTime("exp")
	if !hasExp || !ok {
		return iat, nbf, exp, tokenErr(CodeTokenExpired, "exp missing or not a NumericDate")
	}
	limit := now.Add(TokenClockSkew)
	if hasNbf && nbf.After(limit) {
		return iat, nbf, exp, tokenErr(CodeTokenNotYetValid, "nbf is in the future")
	}
	if hasIat && iat.After(limit) {
		return iat, nbf, exp, tokenErr(CodeTokenNotYetValid, "iat is in the future")
	}
	if !now.Before(exp.Add(TokenClockSkew)) {
		return iat, nbf, exp, tokenErr(CodeTokenExpired, "")
	}
	ref := now
	switch {
	case hasIat && hasNbf:
		ref = iat
		if nbf.After(iat) {
			ref = nbf
		}
	case hasIat:
		ref = iat
	case hasNbf:
		ref = nbf
	}
	if exp.Sub(ref) > MaxTokenLifetime {
		return iat, nbf, exp, tokenErr(CodeTokenTooLong, "")
	}
	return iat, nbf, exp, nil
}

// mintTimes computes iat and exp (whole seconds) for a token minted at now
// with ttl (0 means DefaultTokenTTL).
func mintTimes(ttl time.Duration, now time.Time) (iat, exp int64, terr *TokenError) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second {
		return 0, 0, tokenErr(CodeTokenExpired, "ttl must be at least 1s (got "+ttl.String()+")")
	}
	if ttl > MaxTokenLifetime {
		return 0, 0, tokenErr(CodeTokenTooLong, "ttl "+ttl.String()+" is longer than 24h")
	}
	iat = now.Unix()
	return iat, iat + int64(ttl/time.Second), nil
}
