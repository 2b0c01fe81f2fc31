package store

import (
	"encoding/json"
	"fmt"
)

// EncodeList is how backends store a list of strings (a node's URIs and
// secret fingerprints) in one text column: a JSON array.
func EncodeList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l) // a []string always encodes
	return string(b)
}

// DecodeList reads what EncodeList wrote.
func DecodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("store: bad list column: %w", err)
	}
	return l, nil
}

// DecodeNodeLists fills n's URIs and SecretFingerprints from their columns.
func DecodeNodeLists(n *Node, uris, fps string) error {
	var err error
	if n.URIs, err = DecodeList(uris); err != nil {
		return err
	}
	n.SecretFingerprints, err = DecodeList(fps)
	return err
}
