// Command zkstat prints one line per znode of a subtree, "path mzxid version data" (data on one
// line), so the kind suite can read endpoints and tell whether the operator rewrote anything
// (a rewrite changes mzxid). A missing root prints nothing and exits 0.
//
//	zkstat host:port /podkeeper/ns/service
package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: zkstat host:port /path")
		os.Exit(2)
	}
	conn, _, err := zk.Connect([]string{os.Args[1]}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	if err := walk(conn, os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func walk(conn *zk.Conn, p string) error {
	data, stat, err := conn.Get(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil // gone between listing and reading (or no root at all)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	fmt.Printf("%s %d %d %s\n", p, stat.Mzxid, stat.Version, strings.ReplaceAll(string(data), "\n", " "))
	children, _, err := conn.Children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	sort.Strings(children)
	for _, c := range children {
		if err := walk(conn, path.Join(p, c)); err != nil {
			return err
		}
	}
	return nil
}
