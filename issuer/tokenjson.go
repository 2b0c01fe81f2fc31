package issuer

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// appendTokenJSON appends t.Resource() as writeJSON writes it — what
// encoding/json's Encoder with SetEscapeHTML(false) makes, final newline
// included — without reflection or the intermediate TokenResource. The
// Tokens answer is the issuer's hot path; TestTokenJSONMatchesEncoder holds
// the two byte for byte.
func appendTokenJSON(b []byte, t Token) []byte {
	b = append(b, `{"account_sid":`...)
	b = appendJSONString(b, t.AccountSid)
	b = append(b, `,"date_created":`...)
	b = appendJSONTime(b, t.DateCreated)
	b = append(b, `,"date_updated":`...)
	b = appendJSONTime(b, t.DateUpdated)
	b = append(b, `,"ice_servers":`...)
	if t.ICEServers == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, e := range t.ICEServers {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"url":`...)
			b = appendJSONString(b, e.URL)
			b = append(b, `,"urls":`...)
			b = appendJSONString(b, e.URLs)
			if e.Username != "" {
				b = append(b, `,"username":`...)
				b = appendJSONString(b, e.Username)
			}
			if e.Credential != "" {
				b = append(b, `,"credential":`...)
				b = appendJSONString(b, e.Credential)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"password":`...)
	b = appendJSONString(b, t.Password)
	b = append(b, `,"ttl":"`...)
	b = strconv.AppendInt(b, int64(t.TTL/time.Second), 10)
	b = append(b, `","username":`...)
	b = appendJSONString(b, t.Username)
	return append(b, "}\n"...)
}

// appendJSONTime appends formatTime(t) as a JSON string.
func appendJSONTime(b []byte, t time.Time) []byte {
	var buf [64]byte
	return appendJSONString(b, t.UTC().AppendFormat(buf[:0], TimeFormat))
}

// appendJSONString appends s as encoding/json quotes it without HTML
// escaping. Printable ASCII other than '"' and '\' is written as it is —
// every string of a token is such (SIDs, hex, base64, dates, and URIs as
// configured); anything else goes through encoding/json itself.
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(string(s)) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
