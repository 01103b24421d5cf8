// Command latency-proxy forwards TCP connections to an address, holding
// every chunk of bytes for a fixed delay in each direction — a stand-in
// for a network between machines where the kernel offers no netem:
//
//	latency-proxy -listen 127.0.0.1:4223 -to 127.0.0.1:4222 -delay 1ms
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"time"
)

type chunk struct {
	at time.Time
	b  []byte
}

// pipe copies src to dst, each chunk written delay after it was read,
// in order.
func pipe(dst, src net.Conn, delay time.Duration) {
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now(), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at.Add(delay)))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, src)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	to := flag.String("to", "", "address to forward to")
	delay := flag.Duration("delay", time.Millisecond, "delay each way")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("forwarding %s to %s with %v each way", ln.Addr(), *to, *delay)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			up, err := net.Dial("tcp", *to)
			if err != nil {
				log.Print(err)
				c.Close()
				return
			}
			go pipe(up, c, *delay)
			pipe(c, up, *delay)
			c.Close()
			up.Close()
		}()
	}
}
