// Command demo-app is the workload of scripts/kind-demo and the kind suite: an HTTP server
// whose readiness endpoint a test can switch off and on, and which keeps serving for a while
// after SIGTERM, as a well-behaved service does while it drains.
//
//	demo-app serve                 serve on $LISTEN (default :8080)
//	demo-app ready true|false      switch the readiness of the server on 127.0.0.1 (run it with
//	                               kubectl exec: the image has no shell)
//
// Endpoints: / (who answers), /ready (200 or 503), /healthz (always 200), and
// PUT /admin/ready?value=true|false (loopback only).
// Env: LISTEN, POD_NAME, READY_AT_START (default true), SHUTDOWN_DELAY (default 5s: how long
// it keeps serving after SIGTERM before it exits).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-app serve | demo-app ready true|false")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve()
	case "ready":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: demo-app ready true|false")
			os.Exit(2)
		}
		os.Exit(setReady(os.Args[2]))
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func serve() {
	listen := env("LISTEN", ":8080")
	pod := env("POD_NAME", "demo-app")
	startReady, err := strconv.ParseBool(env("READY_AT_START", "true"))
	if err != nil {
		log.Fatalf("READY_AT_START: %v", err)
	}
	delay, err := time.ParseDuration(env("SHUTDOWN_DELAY", "5s"))
	if err != nil {
		log.Fatalf("SHUTDOWN_DELAY: %v", err)
	}
	var ready atomic.Bool
	ready.Store(startReady)

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", pod)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("PUT /admin/ready", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			http.Error(w, "loopback only", http.StatusForbidden)
			return
		}
		v, err := strconv.ParseBool(r.URL.Query().Get("value"))
		if err != nil {
			http.Error(w, "value must be true or false", http.StatusBadRequest)
			return
		}
		ready.Store(v)
		log.Printf("readiness set to %v", v)
		fmt.Fprintf(w, "ready=%v\n", v)
	})

	server := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-stop
		log.Printf("%v: serving %v more, then exiting", s, delay)
		time.Sleep(delay)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()
	log.Printf("%s listening on %s (ready=%v)", pod, listen, ready.Load())
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func setReady(value string) int {
	if _, err := strconv.ParseBool(value); err != nil {
		fmt.Fprintln(os.Stderr, "value must be true or false")
		return 2
	}
	_, port, err := net.SplitHostPort(env("LISTEN", ":8080"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	req, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1:"+port+"/admin/ready?value="+value, nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	return 0
}
