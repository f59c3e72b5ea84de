package io.podkeeper.clients;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.apache.dubbo.common.URL;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ConfigCenterConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.registry.NotifyListener;
import org.apache.dubbo.registry.Registry;
import org.apache.dubbo.registry.client.migration.MigrationInvoker;
import org.apache.dubbo.registry.zookeeper.ZookeeperRegistryFactory;
import org.apache.dubbo.rpc.Invoker;
import org.apache.dubbo.rpc.cluster.ClusterInvoker;
import org.apache.dubbo.rpc.cluster.LoadBalance;
import org.apache.dubbo.rpc.model.ApplicationModel;
import org.apache.dubbo.rpc.service.GenericService;

/**
 * Dubbo's own interface-level ZooKeeper registry (ZookeeperRegistry over Curator 5), as a
 * consumer and as a provider that registers itself ephemerally (the "VM neighbour"). Prints one
 * JSON object per line on stdout.
 *
 * <pre>
 * consume CONNECT ROOT INTERFACE GROUP VERSION   subscribe; one line per notification, until stdin closes
 *                                                (GROUP / VERSION "-" for none, "*" for any)
 * provide CONNECT ROOT PROVIDER_URL              register; print the URL; unregister when stdin closes
 * reference CONNECT ROOT INTERFACE GROUP VERSION a real consumer (generic ReferenceConfig, ZooKeeper registry
 *                                                and config center on CONNECT, check=false, lazy); one line
 *                                                whenever its invokers' URLs change, until stdin closes
 * </pre>
 */
public final class DubboClient {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("reference")) {
            reference(args[1], args[2], args[3], args[4], args[5]);
            System.exit(0);
        }
        Registry registry = registry(args[1], args[2]);
        switch (args[0]) {
            case "consume" -> consume(registry, args[3], args[4], args[5]);
            case "provide" -> provide(registry, args[3]);
            default -> throw new IllegalArgumentException("unknown mode " + args[0]);
        }
        registry.destroy();
        System.exit(0);
    }

    private static Registry registry(String connect, String root) {
        URL url = URL.valueOf("zookeeper://" + connect.split(",")[0] + "?group=" + root + "&timeout=20000");
        return new ZookeeperRegistryFactory(ApplicationModel.defaultModel()).createRegistry(url);
    }

    private static void consume(Registry registry, String iface, String group, String version) throws Exception {
        StringBuilder q = new StringBuilder("consumer://127.0.0.1/")
                .append(iface)
                .append("?interface=")
                .append(iface)
                .append("&category=providers&side=consumer&check=false");
        if (!group.equals("-")) {
            q.append("&group=").append(group);
        }
        if (!version.equals("-")) {
            q.append("&version=").append(version);
        }
        URL consumer = URL.valueOf(q.toString()).setScopeModel(ApplicationModel.defaultModel().getDefaultModule());
        Object lock = new Object();
        NotifyListener listener = urls -> {
            synchronized (lock) {
                List<URL> providers = new ArrayList<>();
                for (URL u : urls) {
                    if (!"empty".equals(u.getProtocol())) {
                        providers.add(u);
                    }
                }
                providers.sort(Comparator.comparing(URL::getAddress));
                StringBuilder line = new StringBuilder("{\"providers\":[");
                for (int i = 0; i < providers.size(); i++) {
                    URL u = providers.get(i);
                    if (i > 0) {
                        line.append(',');
                    }
                    line.append('{');
                    field(line, "protocol", u.getProtocol()).append(',');
                    field(line, "host", u.getHost()).append(',');
                    line.append("\"port\":").append(u.getPort()).append(',');
                    line.append("\"weight\":").append(u.getParameter("weight", 100)).append(',');
                    field(line, "group", u.getGroup()).append(',');
                    field(line, "version", u.getVersion()).append(',');
                    field(line, "timestamp", u.getParameter("timestamp")).append(',');
                    field(line, "warmup", u.getParameter("warmup")).append(',');
                    field(line, "zone", u.getParameter("podkeeper.zone")).append(',');
                    field(line, "owner", u.getParameter("podkeeper.owner"));
                    line.append('}');
                }
                line.append("]}");
                System.out.println(line);
                System.out.flush();
            }
        };
        registry.subscribe(consumer, listener);
        drainStdin();
        registry.unsubscribe(consumer, listener);
    }

    /**
     * A consumer built the way applications build one, over the interface-level registry only
     * (migration step FORCE_INTERFACE). Every 200 ms it reads the RegistryDirectory's invokers:
     * their URLs are the provider URLs after Dubbo merged the consumer's parameters and applied
     * the configurators (override rules) of the config center. Prints on change:
     * {"invokers":[{"address","weight","loadbalance"}],"loadbalance":the name the cluster uses}
     */
    private static void reference(String connect, String root, String iface, String group, String version)
            throws Exception {
        System.setProperty("dubbo.application.migration.step", "FORCE_INTERFACE");
        String address = "zookeeper://" + connect.split(",")[0];
        ApplicationConfig app = new ApplicationConfig("podkeeper-consumer");
        app.setQosEnable(false);
        RegistryConfig registry = new RegistryConfig(address);
        registry.setGroup(root);
        registry.setTimeout(20000);
        ConfigCenterConfig configCenter = new ConfigCenterConfig();
        configCenter.setAddress(address);
        configCenter.setTimeout(20000L);
        ReferenceConfig<GenericService> ref = new ReferenceConfig<>();
        ref.setInterface(iface);
        ref.setGeneric("true");
        ref.setCheck(false);
        ref.setLazy(true);
        if (!group.equals("-")) {
            ref.setGroup(group);
        }
        if (!version.equals("-")) {
            ref.setVersion(version);
        }
        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(app)
                .registry(registry)
                .configCenter(configCenter)
                .reference(ref)
                .start();
        ref.get();
        Thread stdin = new Thread(() -> {
            try {
                drainStdin();
            } catch (Exception e) {
                // closed
            }
        });
        stdin.setDaemon(true);
        stdin.start();
        String last = null;
        while (stdin.isAlive()) {
            String line = invokersLine(ref.getInvoker());
            if (!line.equals(last)) {
                System.out.println(line);
                System.out.flush();
                last = line;
            }
            Thread.sleep(200);
        }
        bootstrap.stop();
    }

    private static String invokersLine(Invoker<?> invoker) {
        if (invoker instanceof MigrationInvoker<?> migration) {
            invoker = migration.getInvoker();
        }
        List<URL> urls = new ArrayList<>();
        if (invoker instanceof ClusterInvoker<?> cluster) {
            for (Invoker<?> i : cluster.getDirectory().getAllInvokers()) {
                urls.add(i.getUrl());
            }
        }
        urls.sort(Comparator.comparing(URL::getAddress));
        StringBuilder line = new StringBuilder("{\"invokers\":[");
        for (int i = 0; i < urls.size(); i++) {
            URL u = urls.get(i);
            if (i > 0) {
                line.append(',');
            }
            line.append('{');
            field(line, "address", u.getAddress()).append(',');
            line.append("\"weight\":").append(u.getParameter("weight", 100)).append(',');
            field(line, "loadbalance", u.getParameter("loadbalance"));
            line.append('}');
        }
        line.append("],");
        // What AbstractClusterInvoker.initLoadBalance picks: the first invoker's method parameter.
        String name = urls.isEmpty() ? null : urls.get(0).getMethodParameter("sayHello", "loadbalance", "random");
        field(line, "loadbalance", name).append(',');
        String cls = name == null
                ? null
                : ApplicationModel.defaultModel()
                        .getExtensionLoader(LoadBalance.class)
                        .getExtension(name)
                        .getClass()
                        .getSimpleName();
        field(line, "class", cls);
        return line.append('}').toString();
    }

    private static void provide(Registry registry, String providerUrl) throws Exception {
        URL url = URL.valueOf(providerUrl);
        registry.register(url);
        StringBuilder line = new StringBuilder("{");
        field(line, "registered", url.toFullString()).append('}');
        System.out.println(line);
        System.out.flush();
        drainStdin();
        registry.unregister(url);
    }

    private static StringBuilder field(StringBuilder b, String key, String value) {
        b.append('"').append(key).append("\":");
        if (value == null) {
            return b.append("null");
        }
        b.append('"');
        for (char c : value.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"');
    }

    private static void drainStdin() throws Exception {
        while (System.in.read() != -1) {
            // until the test closes our stdin
        }
    }
}
