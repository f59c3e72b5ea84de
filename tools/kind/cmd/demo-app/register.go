package main

// Self-registration in ZooKeeper, as a provider on a VM does it (a Spring Cloud ZooKeeper
// application, a Dubbo provider): an ephemeral node of its own session, created again on every
// new session, deleted when the program stops. The kind suite runs demo-app as such a "VM"
// outside the cluster and imports it with a RegistryImport.
//
// Env: REGISTER_ZK (host:port; unset: no registration), REGISTER_PATH (the node) and
// REGISTER_DATA (its bytes), in both of which {ip} is replaced by this host's address on the
// route to ZooKeeper, the address a provider advertises.

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

type registration struct {
	conn *zk.Conn
	path string
	once sync.Once
}

// registerFromEnv registers when REGISTER_ZK is set; a nil registration deregisters nothing.
func registerFromEnv() (*registration, error) {
	server := os.Getenv("REGISTER_ZK")
	if server == "" {
		return nil, nil
	}
	ip, err := localAddress(server)
	if err != nil {
		return nil, err
	}
	node := strings.ReplaceAll(os.Getenv("REGISTER_PATH"), "{ip}", ip)
	data := []byte(strings.ReplaceAll(os.Getenv("REGISTER_DATA"), "{ip}", ip))
	if !strings.HasPrefix(node, "/") {
		return nil, fmt.Errorf("REGISTER_PATH must be an absolute znode path, not %q", node)
	}
	conn, events, err := zk.Connect([]string{server}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	r := &registration{conn: conn, path: node}
	created := make(chan error, 1)
	go func() {
		first := true
		for ev := range events {
			if ev.Type != zk.EventSession || ev.State != zk.StateHasSession {
				continue
			}
			// A new session (the first, or one after an expiry): the ephemeral node of the
			// old one is gone, so create it again.
			err := create(conn, node, data)
			if err != nil {
				log.Printf("register %s: %v", node, err)
			} else {
				log.Printf("registered %s as %s", node, data)
			}
			if first {
				created <- err
				first = false
			}
		}
	}()
	select {
	case err := <-created:
		if err != nil {
			conn.Close()
			return nil, err
		}
	case <-time.After(30 * time.Second):
		conn.Close()
		return nil, fmt.Errorf("no ZooKeeper session with %s within 30s", server)
	}
	return r, nil
}

// deregister deletes the node and ends the session; safe to call twice and on nil.
func (r *registration) deregister() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		if err := r.conn.Delete(r.path, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			log.Printf("deregister %s: %v", r.path, err)
		} else {
			log.Printf("deregistered %s", r.path)
		}
		r.conn.Close()
	})
}

// create makes the parents (persistent, as Curator's creatingParentContainersIfNeeded) and
// the ephemeral node; a node left by this same session is replaced.
func create(conn *zk.Conn, node string, data []byte) error {
	acl := zk.WorldACL(zk.PermAll)
	dir := ""
	for _, part := range strings.Split(path.Dir(node), "/") {
		if part == "" {
			continue
		}
		dir += "/" + part
		if _, err := conn.Create(dir, nil, 0, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	_, err := conn.Create(node, data, zk.FlagEphemeral, acl)
	if errors.Is(err, zk.ErrNodeExists) {
		if err = conn.Delete(node, -1); err == nil {
			_, err = conn.Create(node, data, zk.FlagEphemeral, acl)
		}
	}
	return err
}

// localAddress is the address this host sends from toward server (no packet is sent).
func localAddress(server string) (string, error) {
	c, err := net.Dial("udp", server)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
