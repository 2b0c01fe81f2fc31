package auth

import (
	"errors"
	"strconv"
)

// Twilio's error codes for refusing an Access Token or a Capability Token
// (https://www.twilio.com/docs/errors). Every refusal from VerifyAccessToken,
// VerifyCapabilityToken and the minting functions carries one of them.
const (
	CodeTokenInvalid      = 20101 // malformed or truncated token
	CodeTokenHeader       = 20102 // header not decodable
	CodeTokenIssuer       = 20103 // iss/sub not an API key / account SID
	CodeTokenExpired      = 20104 // exp in the past, or missing
	CodeTokenNotYetValid  = 20105 // nbf or iat in the future
	CodeTokenGrants       = 20106 // grants or scopes invalid
	CodeTokenSignature    = 20107 // HMAC does not match
	CodeTokenAuth         = 20151 // unknown key, key of another account, suspended account
	CodeTokenTooLong      = 20157 // exp more than 24 h after issue
	CodeTokenHeaderFields = 20160 // header is not typ JWT, alg HS256, cty twilio-fpa;v=1
)

// TokenError is why a token was refused (or could not be minted), with the
// Twilio error code an HTTP layer should answer. Message is Twilio's fixed text
// for the code and is safe to send to a client; Detail says more for logs and
// never contains a secret, but may quote parts of the token.
type TokenError struct {
	Code    int
	Message string
	Detail  string
	// Err is the underlying cause, if any (such as the KeyLookup's error).
	Err error
}

// Error implements error.
func (e *TokenError) Error() string {
	s := "token refused (" + strconv.Itoa(e.Code) + "): " + e.Message
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *TokenError) Unwrap() error { return e.Err }

// Is reports whether target is a *TokenError with the same code, so that
// errors.Is(err, auth.ErrTokenExpired) works whatever the detail.
func (e *TokenError) Is(target error) bool {
	var t *TokenError
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Sentinels for errors.Is, one per code.
var (
	ErrTokenInvalid      = &TokenError{Code: CodeTokenInvalid, Message: tokenMessages[CodeTokenInvalid]}
	ErrTokenHeader       = &TokenError{Code: CodeTokenHeader, Message: tokenMessages[CodeTokenHeader]}
	ErrTokenIssuer       = &TokenError{Code: CodeTokenIssuer, Message: tokenMessages[CodeTokenIssuer]}
	ErrTokenExpired      = &TokenError{Code: CodeTokenExpired, Message: tokenMessages[CodeTokenExpired]}
	ErrTokenNotYetValid  = &TokenError{Code: CodeTokenNotYetValid, Message: tokenMessages[CodeTokenNotYetValid]}
	ErrTokenGrants       = &TokenError{Code: CodeTokenGrants, Message: tokenMessages[CodeTokenGrants]}
	ErrTokenSignature    = &TokenError{Code: CodeTokenSignature, Message: tokenMessages[CodeTokenSignature]}
	ErrTokenAuth         = &TokenError{Code: CodeTokenAuth, Message: tokenMessages[CodeTokenAuth]}
	ErrTokenTooLong      = &TokenError{Code: CodeTokenTooLong, Message: tokenMessages[CodeTokenTooLong]}
	ErrTokenHeaderFields = &TokenError{Code: CodeTokenHeaderFields, Message: tokenMessages[CodeTokenHeaderFields]}
)

var tokenMessages = map[int]string{
	CodeTokenInvalid:      "Invalid Access Token",
	CodeTokenHeader:       "Invalid Access Token header",
	CodeTokenIssuer:       "Invalid Access Token issuer/subject",
	CodeTokenExpired:      "Access Token expired or expiration date invalid",
	CodeTokenNotYetValid:  "Access Token not yet valid",
	CodeTokenGrants:       "Invalid Access Token grants",
	CodeTokenSignature:    "Invalid Access Token signature",
	CodeTokenAuth:         "Authentication Failed",
	CodeTokenTooLong:      "Access Token ttl exceeds the maximum of 24 hours",
	CodeTokenHeaderFields: "Invalid Access Token header: must be typ JWT, alg HS256, cty twilio-fpa;v=1",
}

// tokenErr builds a refusal with Twilio's message for code.
func tokenErr(code int, detail string) *TokenError {
	return &TokenError{Code: code, Message: tokenMessages[code], Detail: detail}
}

// CodeOf returns the Twilio code carried by err, or 0 when err is nil or not
// a token refusal.
func CodeOf(err error) int {
	var t *TokenError
	if errors.As(err, &t) {
		return t.Code
	}
	return 0
}
