package io.podkeeper.clients;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.URI;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.RetryNTimes;
import org.apache.curator.x.discovery.ServiceCache;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.UriSpec;
import org.apache.curator.x.discovery.details.JsonInstanceSerializer;
import org.apache.curator.x.discovery.details.ServiceCacheListener;
import org.springframework.cloud.zookeeper.discovery.ZookeeperInstance;
import org.springframework.cloud.zookeeper.discovery.ZookeeperServiceInstance;

/**
 * Reads podkeeper's Curator layout the way a Spring Cloud ZooKeeper application does: Curator's
 * ServiceDiscovery with a JsonInstanceSerializer for Spring's ZookeeperInstance payload.
 * Prints one JSON object per line on stdout.
 *
 * <pre>
 * query     CONNECT BASE SERVICE   queryForInstances once
 * cache     CONNECT BASE SERVICE   a ServiceCache; one line per cache change, until stdin closes
 * register  CONNECT BASE SERVICE ADDRESS PORT
 *                                  registers one instance as a Spring application does (an
 *                                  ephemeral node of this session); unregisters when stdin closes
 * reserialize                      stdin: one instance's bytes; prints Curator's own bytes for it
 * </pre>
 */
public final class CuratorClient {
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "query" -> query(args[1], args[2], args[3]);
            case "cache" -> cache(args[1], args[2], args[3]);
            case "register" -> register(args[1], args[2], args[3], args[4], Integer.parseInt(args[5]));
            case "reserialize" -> reserialize();
            default -> throw new IllegalArgumentException("unknown mode " + args[0]);
        }
        System.exit(0);
    }

    private static JsonInstanceSerializer<ZookeeperInstance> serializer() {
        // As Spring Cloud ZooKeeper builds it; `false` also writes `enabled` when reserializing.
        return new JsonInstanceSerializer<>(ZookeeperInstance.class, false);
    }

    private static ServiceDiscovery<ZookeeperInstance> discovery(CuratorFramework client, String base)
            throws Exception {
        ServiceDiscovery<ZookeeperInstance> d = ServiceDiscoveryBuilder.builder(ZookeeperInstance.class)
                .client(client)
                .basePath(base)
                .serializer(serializer())
                .build();
        d.start();
        return d;
    }

    private static CuratorFramework connect(String connect) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.newClient(connect, 10_000, 5_000, new RetryNTimes(3, 200));
        client.start();
        if (!client.blockUntilConnected(20, java.util.concurrent.TimeUnit.SECONDS)) {
            throw new IllegalStateException("no ZooKeeper connection to " + connect);
        }
        return client;
    }

    private static void query(String connect, String base, String service) throws Exception {
        try (CuratorFramework client = connect(connect);
                ServiceDiscovery<ZookeeperInstance> d = discovery(client, base)) {
            ObjectNode line = JSON.createObjectNode();
            try {
                line.set("instances", describe(d.queryForInstances(service)));
            } catch (Exception e) {
                line.put("error", e.toString());
            }
            emit(line);
        }
    }

    private static void cache(String connect, String base, String service) throws Exception {
        try (CuratorFramework client = connect(connect);
                ServiceDiscovery<ZookeeperInstance> d = discovery(client, base)) {
            ServiceCache<ZookeeperInstance> cache = d.serviceCacheBuilder().name(service).build();
            Object lock = new Object();
            cache.addListener(new ServiceCacheListener() {
                @Override
                public void cacheChanged() {
                    synchronized (lock) {
                        ObjectNode line = JSON.createObjectNode();
                        line.set("snapshot", describe(cache.getInstances()));
                        emit(line);
                    }
                }

                @Override
                public void stateChanged(CuratorFramework c, ConnectionState s) {}
            });
            cache.start();
            synchronized (lock) {
                ObjectNode line = JSON.createObjectNode();
                line.set("snapshot", describe(cache.getInstances()));
                line.put("initial", true);
                emit(line);
            }
            drainStdin();
            cache.close();
        }
    }

    private static void register(String connect, String base, String service, String address, int port)
            throws Exception {
        try (CuratorFramework client = connect(connect);
                ServiceDiscovery<ZookeeperInstance> d = discovery(client, base)) {
            ServiceInstance<ZookeeperInstance> instance = ServiceInstance.<ZookeeperInstance>builder()
                    .name(service)
                    .address(address)
                    .port(port)
                    .payload(new ZookeeperInstance(address + ":" + port, service, Map.of("instance_status", "UP")))
                    .uriSpec(new UriSpec("{scheme}://{address}:{port}"))
                    .build();
            d.registerService(instance);
            ObjectNode line = JSON.createObjectNode();
            line.put("registered", instance.getId());
            emit(line);
            drainStdin();
            d.unregisterService(instance);
        }
    }

    private static void reserialize() throws Exception {
        byte[] in = readAll(System.in);
        JsonInstanceSerializer<ZookeeperInstance> s = serializer();
        ServiceInstance<ZookeeperInstance> instance = s.deserialize(in);
        System.out.write(s.serialize(instance));
        System.out.println();
        System.out.flush();
    }

    private static ArrayNode describe(Collection<ServiceInstance<ZookeeperInstance>> instances) {
        List<ServiceInstance<ZookeeperInstance>> sorted = new ArrayList<>(instances);
        sorted.sort(Comparator.comparing(ServiceInstance::getId));
        ArrayNode out = JSON.createArrayNode();
        for (ServiceInstance<ZookeeperInstance> i : sorted) {
            ObjectNode o = out.addObject();
            o.put("id", i.getId());
            o.put("name", i.getName());
            o.put("address", i.getAddress());
            o.put("port", i.getPort());
            if (i.getSslPort() != null) {
                o.put("sslPort", i.getSslPort());
            }
            o.put("enabled", i.isEnabled());
            o.put("serviceType", String.valueOf(i.getServiceType()));
            o.put("registrationTimeUTC", i.getRegistrationTimeUTC());
            o.put("uri", i.buildUriSpec());
            spring(o, i);
            ZookeeperInstance p = i.getPayload();
            if (p != null) {
                o.put("payloadClass", p.getClass().getName());
                ObjectNode md = o.putObject("metadata");
                for (Map.Entry<String, String> e : p.getMetadata().entrySet()) {
                    md.put(e.getKey(), e.getValue());
                }
            }
        }
        return out;
    }

    /** What Spring's DiscoveryClient hands the application for this instance. */
    private static void spring(ObjectNode o, ServiceInstance<ZookeeperInstance> i) {
        ZookeeperServiceInstance s = new ZookeeperServiceInstance(i.getName(), i);
        URI uri = s.getUri();
        ObjectNode sp = o.putObject("spring");
        sp.put("host", s.getHost());
        sp.put("port", s.getPort());
        sp.put("uri", uri.toString());
        sp.put("uriHost", uri.getHost());
        sp.put("uriPort", uri.getPort());
        try {
            sp.put("resolved", InetAddress.getByName(s.getHost()).getHostAddress());
        } catch (Exception e) {
            sp.put("resolveError", e.toString());
        }
    }

    static void emit(ObjectNode line) {
        try {
            System.out.println(JSON.writeValueAsString(line));
            System.out.flush();
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    static void drainStdin() throws Exception {
        while (System.in.read() != -1) {
            // until the test closes our stdin
        }
    }

    static byte[] readAll(InputStream in) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        in.transferTo(out);
        return out.toByteArray();
    }
}
