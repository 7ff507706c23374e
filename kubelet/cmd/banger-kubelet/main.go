// Command banger-kubelet joins this host to a Kubernetes cluster as a
// virtual-kubelet node whose pods are banger microVMs. `banger kubelet`
// runs it; it talks to the local daemon over its socket like every banger
// client, and to the API server with its own kubeconfig.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"banger/api"
	"banger/client"
	"banger/kubelet/provider"
)

// version is set by the build (-X main.version=...).
var version = "dev"

type config struct {
	kubeconfig, nodeName, socket, listen, nodeIP string
	certFile, keyFile, clientCAFile              string
	nat                                          bool
	maxCreates                                   int
	showVersion                                  bool
}

func main() {
	log.SetFlags(log.LstdFlags)
	var c config
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("banger-kubelet", flag.ContinueOnError)
	fs.StringVar(&c.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "the node's kubeconfig (its identity: system:node:NAME in group system:nodes)")
	fs.StringVar(&c.nodeName, "node-name", host, "the Node's name")
	fs.StringVar(&c.socket, "socket", api.SocketFromEnv(), "the banger daemon's socket")
	fs.StringVar(&c.listen, "listen", "0.0.0.0:10250", "where the kubelet API (logs, exec, port-forward) listens, HTTPS")
	fs.StringVar(&c.nodeIP, "node-ip", "", "the address the API server reaches the kubelet API at (default: the host's first non-loopback IPv4)")
	fs.StringVar(&c.certFile, "tls-cert-file", "", "the kubelet API's serving certificate (default: a self-signed one made at start)")
	fs.StringVar(&c.keyFile, "tls-private-key-file", "", "its key")
	fs.StringVar(&c.clientCAFile, "client-ca-file", "", "CA that signs the API server's kubelet client certificate (default: the kubeconfig's CA)")
	fs.BoolVar(&c.nat, "nat", true, "give pod VMs outbound NAT")
	fs.IntVar(&c.maxCreates, "max-creates", 4, "VM creates (pulls and boots) at once; more pods wait Pending")
	fs.BoolVar(&c.showVersion, "version", false, "print the version")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if c.showVersion {
		fmt.Println("banger-kubelet", version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Printf("banger-kubelet: %v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	if c.kubeconfig == "" {
		return errors.New("--kubeconfig is required: the node's kubeconfig (see docs/kubernetes.md)")
	}
	if err := validName(c.nodeName); err != nil {
		return err
	}
	_, portStr, err := net.SplitHostPort(c.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", c.listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("--listen %q: bad port", c.listen)
	}
	if c.nodeIP == "" {
		if c.nodeIP, err = firstIPv4(); err != nil {
			return err
		}
	}
	if net.ParseIP(c.nodeIP) == nil {
		return fmt.Errorf("--node-ip %q is not an IP address", c.nodeIP)
	}

	bc := client.New(c.socket)
	ping, err := bc.CheckVersion(ctx)
	if err != nil {
		return fmt.Errorf("banger daemon at %s: %w (is `banger daemon` running? --socket)", c.socket, err)
	}

	restCfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", c.kubeconfig, err)
	}
	restCfg.UserAgent = "banger-kubelet/" + version
	kc, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", c.kubeconfig, err)
	}

	spec, err := provider.NodeSpec(c.nodeName, c.nodeIP, int32(port), ping.StateDir, version)
	if err != nil {
		return err
	}
	tlsCfg, err := servingTLS(c)
	if err != nil {
		return err
	}
	caPEM := restCfg.TLSClientConfig.CAData
	if c.clientCAFile != "" {
		if caPEM, err = os.ReadFile(c.clientCAFile); err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
	} else if len(caPEM) == 0 && restCfg.TLSClientConfig.CAFile != "" {
		if caPEM, err = os.ReadFile(restCfg.TLSClientConfig.CAFile); err != nil {
			return fmt.Errorf("the kubeconfig's CA: %w", err)
		}
	}
	if len(caPEM) == 0 {
		return errors.New("no CA to check the API server's client certificate with: give --client-ca-file")
	}
	caProvider, err := dynamiccertificates.NewStaticCAContent("client-ca", caPEM)
	if err != nil {
		return fmt.Errorf("client CA: %w", err)
	}
	// The API server authenticates with its kubelet client certificate;
	// every request is then authorized by a SubjectAccessReview, as the
	// kubelet does (nodes/proxy, nodes/log, ...).
	auth, err := nodeutil.WebhookAuth(kc, c.nodeName, func(w *nodeutil.WebhookAuthConfig) error {
		w.AuthnConfig.ClientCertificateCAContentProvider = caProvider
		return nil
	})
	if err != nil {
		return fmt.Errorf("kubelet API auth: %w", err)
	}

	eb := record.NewBroadcaster()
	defer eb.Shutdown()
	eb.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: kc.CoreV1().Events(corev1.NamespaceAll)})
	rec := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "banger-kubelet", Host: c.nodeName})

	var prov *provider.Provider
	mux := http.NewServeMux()
	n, err := nodeutil.NewNode(c.nodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		prov = provider.New(bc, provider.Options{Node: c.nodeName, NAT: c.nat, MaxCreates: c.maxCreates}, c.nodeIP, pc.Pods, rec)
		adopted, err := prov.Adopt(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("reading back this node's VMs: %w", err)
		}
		if adopted > 0 {
			log.Printf("banger-kubelet: %d VMs of this node found on the daemon: matched to their pods again", adopted)
		}
		return prov, provider.NewNodeHealth(bc, 15*time.Second, pc.Node), nil
	},
		nodeutil.WithClient(kc),
		nodeutil.AttachProviderRoutes(mux),
		nodeutil.WithTLSConfig(func(t *tls.Config) error {
			t.Certificates = tlsCfg.Certificates
			t.ClientAuth = tls.RequestClientCert // checked by the authenticator against the client CA
			return nil
		}),
		func(cfg *nodeutil.NodeConfig) error {
			cfg.NodeSpec = spec
			cfg.HTTPListenAddr = c.listen
			cfg.Handler = nodeutil.WithAuth(auth, mux)
			cfg.EventRecorder = rec
			cfg.NumWorkers = 8
			cfg.StreamIdleTimeout = 4 * time.Hour
			cfg.StreamCreationTimeout = 30 * time.Second
			return nil
		},
	)
	if err != nil {
		return err
	}
	go func() {
		if err := n.WaitReady(ctx, 0); err == nil {
			prov.StartOrphanSweep()
			log.Printf("banger-kubelet: node %s ready (daemon %s, state %s, kubelet API %s)", c.nodeName, c.socket, ping.StateDir, c.listen)
		}
	}()
	if err := n.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// servingTLS loads the kubelet API's certificate, or makes a self-signed
// one for this run (the API server does not check kubelet serving
// certificates unless given --kubelet-certificate-authority).
func servingTLS(c config) (*tls.Config, error) {
	if c.certFile != "" || c.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file/--tls-private-key-file: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "banger-kubelet " + c.nodeName},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{c.nodeName},
		IPAddresses:  []net.IP{net.ParseIP(c.nodeIP)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

func firstIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address: give --node-ip")
}

// validName: a Node name is a DNS subdomain.
func validName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("--node-name %q: want 1-253 characters", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("--node-name %q: only lowercase letters, digits, '-' and '.' are allowed", s)
		}
	}
	return nil
}
