package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// Grants are the product permissions of an Access Token, one field per
// grant key Twilio's helper libraries write. A nil grant is absent; a non-nil
// grant with every field empty is written as {} (twilio-node does the same).
// The field order is the order they are written in, after "identity".
type Grants struct {
	// Chat is Programmable Chat / Conversations ("chat").
	Chat *ChatGrant `json:"chat,omitempty"`
	// IPMessaging is the legacy name of Chat ("ip_messaging", twilio-go).
	IPMessaging *ChatGrant `json:"ip_messaging,omitempty"`
	// Voice is Programmable Voice ("voice"). It requires an identity of only
	// alphanumerics and underscore.
	Voice *VoiceGrant `json:"voice,omitempty"`
	// Video is Programmable Video ("video").
	Video *VideoGrant `json:"video,omitempty"`
	// DataSync is Sync ("data_sync").
	DataSync *SyncGrant `json:"data_sync,omitempty"`
	// RTC is the Conversations RTC grant of twilio-go ("rtc").
	RTC *RTCGrant `json:"rtc,omitempty"`
	// TaskRouter is TaskRouter ("task_router").
	TaskRouter *TaskRouterGrant `json:"task_router,omitempty"`
	// Player is the Live player grant ("player"), an arbitrary JSON object
	// kept verbatim.
	Player json.RawMessage `json:"player,omitempty"`
	// NTS is traverse's own grant for the Network Traversal Service ("nts").
	NTS *NTSGrant `json:"nts,omitempty"`
}

// ChatGrant is the "chat" and "ip_messaging" grant.
type ChatGrant struct {
	ServiceSid        string `json:"service_sid,omitempty"`
	EndpointID        string `json:"endpoint_id,omitempty"`
	DeploymentRoleSid string `json:"deployment_role_sid,omitempty"`
	PushCredentialSid string `json:"push_credential_sid,omitempty"`
}

// VoiceGrant is the "voice" grant. On the wire: incoming {allow: true} only
// when IncomingAllow, outgoing {application_sid, params} only when
// OutgoingApplicationSid is set.
type VoiceGrant struct {
	IncomingAllow          bool
	OutgoingApplicationSid string
	// OutgoingParams are passed to the TwiML application; any JSON values.
	OutgoingParams    map[string]any
	PushCredentialSid string
	EndpointID        string
}

type voiceIncoming struct {
	Allow bool `json:"allow"`
}

type voiceOutgoing struct {
	ApplicationSid string         `json:"application_sid,omitempty"`
	Params         map[string]any `json:"params,omitempty"`
}

type voiceWire struct {
	Incoming          *voiceIncoming `json:"incoming,omitempty"`
	Outgoing          *voiceOutgoing `json:"outgoing,omitempty"`
	PushCredentialSid string         `json:"push_credential_sid,omitempty"`
	EndpointID        string         `json:"endpoint_id,omitempty"`
}

// MarshalJSON writes the grant in twilio-node's shape and key order.
func (g VoiceGrant) MarshalJSON() ([]byte, error) {
	w := voiceWire{PushCredentialSid: g.PushCredentialSid, EndpointID: g.EndpointID}
	if g.IncomingAllow {
		w.Incoming = &voiceIncoming{Allow: true}
	}
	if g.OutgoingApplicationSid != "" {
		w.Outgoing = &voiceOutgoing{ApplicationSid: g.OutgoingApplicationSid, Params: g.OutgoingParams}
	}
	return marshalJSON(w)
}

// UnmarshalJSON reads the grant as either library writes it.
func (g *VoiceGrant) UnmarshalJSON(data []byte) error {
	var w voiceWire
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*g = VoiceGrant{PushCredentialSid: w.PushCredentialSid, EndpointID: w.EndpointID}
	if w.Incoming != nil {
		g.IncomingAllow = w.Incoming.Allow
	}
	if w.Outgoing != nil {
		g.OutgoingApplicationSid = w.Outgoing.ApplicationSid
		g.OutgoingParams = w.Outgoing.Params
	}
	return nil
}

// VideoGrant is the "video" grant.
type VideoGrant struct {
	Room string `json:"room,omitempty"`
}

// SyncGrant is the "data_sync" grant.
type SyncGrant struct {
	ServiceSid string `json:"service_sid,omitempty"`
	EndpointID string `json:"endpoint_id,omitempty"`
}

// RTCGrant is the "rtc" grant (twilio-go's ConversationsGrant).
type RTCGrant struct {
	ConfigurationProfileSid string `json:"configuration_profile_sid,omitempty"`
}

// TaskRouterGrant is the "task_router" grant.
type TaskRouterGrant struct {
	WorkspaceSid string `json:"workspace_sid,omitempty"`
	WorkerSid    string `json:"worker_sid,omitempty"`
	Role         string `json:"role,omitempty"`
}

// MaxNTSGrantTTL bounds the TTL an NTS grant may carry.
const MaxNTSGrantTTL = 7 * 24 * time.Hour

// NTSGrant is traverse's grant for the Network Traversal Service, written
// {"ttl": <seconds>}: TTL, when non-zero, caps the lifetime of the TURN
// credentials the token may obtain. {} means no cap of its own.
type NTSGrant struct {
	TTL time.Duration
}

type ntsWire struct {
	TTL *json.Number `json:"ttl,omitempty"`
}

// MarshalJSON writes {"ttl": whole seconds}, or {} when TTL is 0.
func (g NTSGrant) MarshalJSON() ([]byte, error) {
	if g.TTL == 0 {
		return []byte("{}"), nil
	}
	if g.TTL < time.Second || g.TTL > MaxNTSGrantTTL {
		return nil, errBadNTSTTL
	}
	n := json.Number(strconv.FormatInt(int64(g.TTL/time.Second), 10))
	return marshalJSON(ntsWire{TTL: &n})
}

// UnmarshalJSON reads {"ttl": n} with n a whole number of seconds in
// [1, MaxNTSGrantTTL], or {}.
func (g *NTSGrant) UnmarshalJSON(data []byte) error {
	var w ntsWire
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	*g = NTSGrant{}
	if w.TTL == nil {
		return nil
	}
	n, err := w.TTL.Int64()
	if err != nil || n < 1 || time.Duration(n) > MaxNTSGrantTTL/time.Second {
		return errBadNTSTTL
	}
	g.TTL = time.Duration(n) * time.Second
	return nil
}

var errBadNTSTTL = errors.New("nts ttl must be whole seconds in [1, 604800]")

// grantsWire is the "grants" claim as written: identity first, then Grants.
type grantsWire struct {
	Identity string `json:"identity,omitempty"`
	Grants
}

// decodeGrants reads the "grants" claim. Unknown grant keys are ignored, as
// Twilio does; a known one that is not an object of the right shape, or an
// identity that is not a string, is an error.
func decodeGrants(raw json.RawMessage) (identity string, g Grants, err error) {
	var m map[string]json.RawMessage
	if err := decodeObject(raw, &m); err != nil {
		return "", g, errors.New("grants is not a JSON object")
	}
	for k, v := range m {
		if k == "identity" {
			s, ok := rawString(v)
			if !ok {
				return "", g, errors.New("identity is not a string")
			}
			identity = s
			continue
		}
		var dst any
		switch k {
		case "chat":
			g.Chat = new(ChatGrant)
			dst = g.Chat
		case "ip_messaging":
			g.IPMessaging = new(ChatGrant)
			dst = g.IPMessaging
		case "voice":
			g.Voice = new(VoiceGrant)
			dst = g.Voice
		case "video":
			g.Video = new(VideoGrant)
			dst = g.Video
		case "data_sync":
			g.DataSync = new(SyncGrant)
			dst = g.DataSync
		case "rtc":
			g.RTC = new(RTCGrant)
			dst = g.RTC
		case "task_router":
			g.TaskRouter = new(TaskRouterGrant)
			dst = g.TaskRouter
		case "player":
			if !isObject(v) {
				return "", g, errors.New("player grant is not a JSON object")
			}
			g.Player = append(json.RawMessage(nil), v...)
			continue
		case "nts":
			g.NTS = new(NTSGrant)
			dst = g.NTS
		default:
			continue
		}
		if !isObject(v) {
			return "", g, errors.New(k + " grant is not a JSON object")
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return "", g, errors.New(k + " grant: " + err.Error())
		}
	}
	return identity, g, nil
}
