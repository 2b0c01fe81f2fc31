package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// KeySize is the length of the encryption key: AES-256.
const KeySize = 32

// sealedVersion prefixes every sealed value so the format can change later.
const sealedVersion = 1

// errOpen is returned when a sealed value does not decrypt.
var errOpen = errors.New("store: sealed value does not decrypt")

// Cipher seals and opens secrets with AES-256-GCM. Each value is bound to
// associated data naming where it is stored (for example "account:AC…:auth_token"),
// so a ciphertext copied to another row does not decrypt.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher builds a Cipher from a 32-byte key.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("store: encryption key must be %d bytes (got %d)", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Cipher{aead: aead}, nil
}

// Seal encrypts plaintext bound to ad: version byte, random nonce, ciphertext.
func (c *Cipher) Seal(plaintext, ad string) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+c.aead.Overhead())
	out[0] = sealedVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return c.aead.Seal(out, out[1:1+ns], []byte(plaintext), []byte(ad)), nil
}

// Open decrypts a value made by Seal with the same ad. A wrong key, wrong ad
// or altered bytes give an error.
func (c *Cipher) Open(sealed []byte, ad string) (string, error) {
	ns := c.aead.NonceSize()
	if len(sealed) < 1+ns+c.aead.Overhead() || sealed[0] != sealedVersion {
		return "", errOpen
	}
	pt, err := c.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(ad))
	if err != nil {
		return "", errOpen
	}
	return string(pt), nil
}

// The associated data that binds each sealed value to its place, so a
// sealed secret copied to another row or column does not open. Every
// backend seals with these, so their at-rest formats are the same.
const (
	// KeyCheckAD binds the marker that tells whether a key opens a database.
	KeyCheckAD = "meta:key_check"
	// KeyCheckPlaintext is the marker's clear text.
	KeyCheckPlaintext = "traverse"
)

// AuthTokenAD binds an account's sealed auth token to its SID.
func AuthTokenAD(sid string) string { return "account:" + sid + ":auth_token" }

// KeySecretAD binds an API key's sealed secret to its SID.
func KeySecretAD(sid string) string { return "key:" + sid + ":secret" }
