// Command demo-app is the workload of scripts/kind-demo and the kind suite: an HTTP server
// whose readiness endpoint a test can switch off and on, and which keeps serving for a while
// after SIGTERM, as a well-behaved service does while it drains.
//
//	demo-app serve                 serve on $LISTEN (default :8080)
//	demo-app ready true|false      switch the readiness of the server on 127.0.0.1 (run it with
//	                               kubectl exec: the image has no shell)
//	demo-app call URL N            N GETs of URL, each on a new connection (so each one goes
//	                               through kube-proxy's choice again): first "resolved HOST ADDRS",
//	                               then one line per call, the answer or "error ..."
//
// Endpoints: / (who answers), /ready (200 or 503), /healthz (always 200), and
// PUT /admin/ready?value=true|false (loopback only).
// Env: LISTEN, POD_NAME, READY_AT_START (default true), SHUTDOWN_DELAY (default 5s: how long
// it keeps serving after SIGTERM before it exits), BURN_CPU (true: one goroutine spins for the
// process's lifetime, a CPU-bound workload), and, to register itself in ZooKeeper as a
// provider on a VM does (register.go): REGISTER_ZK, REGISTER_PATH, REGISTER_DATA.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-app serve | demo-app ready true|false | demo-app call URL N")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve()
	case "call":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: demo-app call URL N")
			os.Exit(2)
		}
		os.Exit(call(os.Args[2], os.Args[3]))
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
	if burn, _ := strconv.ParseBool(env("BURN_CPU", "false")); burn {
		go spin()
	}

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
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatal(err)
	}
	// Registered only once it accepts connections; deregistered first thing on SIGTERM, while
	// it still serves, as Curator's ServiceDiscovery.close() and Dubbo's shutdown hook do.
	registration, err := registerFromEnv()
	if err != nil {
		log.Fatalf("register: %v", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-stop
		registration.deregister()
		log.Printf("%v: serving %v more, then exiting", s, delay)
		time.Sleep(delay)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()
	log.Printf("%s listening on %s (ready=%v)", pod, listen, ready.Load())
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
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

// spin burns one core (or what the container's CPU limit allows) until the process ends.
func spin() {
	n := uint64(0)
	for {
		n++
		if n == 0 {
			runtime.Gosched()
		}
	}
}

// call makes n GETs of url, each on a new connection, and prints what answered.
func call(url, count string) int {
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "N must be a positive number")
		return 2
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	host := req.URL.Hostname()
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), host)
	if err != nil {
		fmt.Printf("resolved %s error %v\n", host, err)
		return 1
	}
	fmt.Printf("resolved %s %s\n", host, strings.Join(addrs, ","))
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	for i := 0; i < n; i++ {
		resp, err := client.Get(url)
		if err != nil {
			fmt.Printf("error %v\n", err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			fmt.Printf("error %v\n", err)
		case resp.StatusCode != http.StatusOK:
			fmt.Printf("error %s\n", resp.Status)
		default:
			fmt.Println(strings.TrimSpace(string(body)))
		}
	}
	return 0
}
