"""The study's MedicalCNN as a PyTorch module, written from issue 3's
description; the oracle of tests/ref/model_parity.py. Module names are chosen
so that state_dict() has exactly the 294 keys our safetensors checkpoints hold
(stem.0.weight, stage1.0.se.fc.0.weight, stage3_md.conv_fusion.bn.running_mean,
fc.8.bias, ...). Run as a script it is a test of its own numbers (parameter,
key and module counts, MACs)."""
import torch
import torch.nn as nn


class SEBlock(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        n, c = x.shape[:2]
        s = self.fc(self.pool(x).view(n, c)).view(n, c, 1, 1)
        return x * s


class ResidualBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SEBlock(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, k, dilation=1):
        super().__init__()
        pad = dilation * (k - 1) // 2
        self.conv = nn.Conv2d(cin, cout, k, 1, pad, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class MultiDilatedBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        b = cout // 4
        self.conv1 = ConvBNReLU(cin, b, 3, 1)
        self.conv2 = ConvBNReLU(cin, b, 3, 2)
        self.conv3 = ConvBNReLU(cin, b, 3, 3)
        self.conv4 = ConvBNReLU(cin, b, 3, 4)
        self.conv_fusion = ConvBNReLU(cout, cout, 1)

    def forward(self, x):
        y = torch.cat([self.conv1(x), self.conv2(x), self.conv3(x), self.conv4(x)], 1)
        return self.conv_fusion(y)


def _stage(cin, cout, blocks, stride):
    layers = [ResidualBlock(cin, cout, stride)]
    layers += [ResidualBlock(cout, cout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MedicalCNN(nn.Module):
    def __init__(self, num_classes=2, dropout=0.3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stage1 = _stage(64, 64, 3, 1)
        self.stage2 = _stage(64, 128, 4, 2)
        self.stage3_res = _stage(128, 256, 6, 2)
        self.stage3_md = MultiDilatedBlock(256, 256)
        self.stage4_res = _stage(256, 512, 3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3_res(x)
        x = self.stage3_md(x)
        x = self.stage4_res(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _self_check():
    """Run as a test: the module has the issue's numbers."""
    import sys
    from common import report, exit_status
    m = MedicalCNN()
    n = sum(p.numel() for p in m.parameters())
    report("PyTorch MedicalCNN: 22,494,274 parameters", n == 22494274, "%d" % n)
    report("PyTorch MedicalCNN: 294 state_dict keys", len(m.state_dict()) == 294, "%d" % len(m.state_dict()))
    kinds = [sum(isinstance(x, t) for x in m.modules())
             for t in (nn.Conv2d, (nn.BatchNorm2d, nn.BatchNorm1d), nn.Linear)]
    report("PyTorch MedicalCNN: 41 conv, 43 BN, 35 linear", kinds == [41, 43, 35], "%s" % kinds)
    macs = [0]

    def count(mod, inputs, out):
        if isinstance(mod, nn.Conv2d):
            macs[0] += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs[0] += mod.in_features * mod.out_features
    for mod in m.modules():
        mod.register_forward_hook(count)
    m.eval()
    with torch.no_grad():
        m(torch.zeros(1, 3, 224, 224))
    report("PyTorch MedicalCNN: 3,792,250,880 MACs per 224x224 image", macs[0] == 3792250880, "%d" % macs[0])
    sys.exit(exit_status())


if __name__ == "__main__":
    _self_check()
