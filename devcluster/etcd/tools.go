//go:build tools

// Package tools makes `go mod tidy` keep the etcd server module.
package tools

import _ "go.etcd.io/etcd/server/v3"
