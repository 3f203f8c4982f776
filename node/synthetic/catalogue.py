"""The national item catalogue of the synthetic network: the same basic codes in every node, so roll-ups line up.

Deterministic and independent of node and seed. Each entry is an approval item (事项) as the national catalogue
lists it: a basic code (基本编码, an..10), a realistic name, the item type (A.1: 01 licence, 07 confirmation,
10 other, 20 public service), the levels that implement it (A.2: 2 province, 3 city, 4 county/district, 5 street),
a legal time limit of 5–30 working days (0 for instant items, 即办件), a promised limit at most half the legal one
(Panyu 2013: at least 50% shorter), and for about 15% of items a fee standard in yuan.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from node.synthetic.names import stable_fraction

TYPE_LICENCE = "01"  # 行政许可
TYPE_CONFIRMATION = "07"  # 行政确认
TYPE_OTHER = "10"  # 其他行政权力
TYPE_PUBLIC_SERVICE = "20"  # 公共服务


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    """One item of the national catalogue (what every implementing body shares)."""

    basic_code: str
    name: str
    type_code: str
    department: str
    levels: str
    legal_limit: int
    promised_limit: int
    fee_standard: Decimal | None
    certificate: str
    popularity: float

    @property
    def instant(self) -> bool:
        """An instant item (即办件): due the day it is accepted."""
        return self.legal_limit == 0

    @property
    def charges_fee(self) -> bool:
        """Whether the item charges a fee (是否收费)."""
        return self.fee_standard is not None


# (name, type code, legal limit in working days (0 = instant), levels, fee standard in yuan or None), per department.
_Entry = tuple[str, str, int, str, str | None]
# fmt: off
_DEPARTMENT_ITEMS: tuple[tuple[str, tuple[_Entry, ...]], ...] = (
    ("市场监督管理局", (
        ("食品经营许可", "01", 20, "34", None),
        ("食品生产许可", "01", 20, "23", None),
        ("小餐饮经营许可", "01", 10, "4", None),
        ("食品小作坊登记", "07", 10, "4", None),
        ("企业设立登记", "01", 15, "34", None),
        ("企业变更登记", "01", 15, "34", None),
        ("企业注销登记", "01", 20, "34", None),
        ("个体工商户登记", "01", 15, "45", None),
        ("特种设备使用登记", "01", 15, "34", None),
        ("计量器具型式批准", "01", 20, "2", None),
        ("工业产品生产许可证核发", "01", 30, "2", None),
        ("药品零售企业经营许可", "01", 30, "34", None),
        ("第三类医疗器械经营许可", "01", 30, "34", None),
        ("第二类医疗器械经营备案", "10", 5, "34", None),
        ("检验检测机构资质认定", "01", 30, "2", None),
        ("药品批发企业经营许可", "01", 30, "2", None),
        ("化妆品生产许可", "01", 30, "2", None),
        ("股权出质登记", "07", 0, "34", None),
        ("动产抵押登记", "07", 0, "34", None),
        ("特种设备作业人员资格认定", "01", 20, "3", "60.00"),
    )),
    ("住房和城乡建设局", (
        ("建筑工程施工许可证核发", "01", 15, "34", None),
        ("建筑业企业资质核准", "01", 20, "234", None),
        ("商品房预售许可", "01", 10, "34", None),
        ("房地产开发企业资质核定", "01", 20, "34", None),
        ("燃气经营许可", "01", 20, "34", None),
        ("特殊建设工程消防设计审查", "01", 15, "34", None),
        ("特殊建设工程消防验收", "01", 15, "34", None),
        ("房屋建筑和市政基础设施工程竣工验收备案", "10", 5, "34", None),
        ("建筑施工企业安全生产许可", "01", 30, "2", None),
        ("房屋租赁登记备案", "10", 0, "45", None),
        ("公共租赁住房资格确认", "07", 20, "34", None),
        ("新建房屋白蚁预防", "20", 10, "34", "1.90"),
        ("建设工程质量检测机构资质核准", "01", 20, "2", None),
    )),
    ("公安局", (
        ("居民身份证换领", "20", 30, "4", "20.00"),
        ("临时居民身份证核发", "20", 0, "4", "10.00"),
        ("户口迁移审批", "01", 20, "4", None),
        ("出生申报户口登记", "07", 5, "4", None),
        ("往来港澳通行证签发", "01", 10, "34", "60.00"),
        ("普通护照签发", "01", 15, "34", "120.00"),
        ("往来台湾通行证签发", "01", 10, "34", "40.00"),
        ("临时机动车号牌核发", "07", 0, "34", "5.00"),
        ("居民户口簿补领", "20", 5, "4", "8.00"),
        ("机动车注册登记", "07", 5, "34", "100.00"),
        ("机动车驾驶证补领", "20", 0, "34", "10.00"),
        ("剧毒化学品购买许可", "01", 5, "34", None),
        ("大型群众性活动安全许可", "01", 7, "34", None),
        ("旅馆业特种行业许可证核发", "01", 20, "34", None),
        ("公章刻制业特种行业许可", "01", 20, "34", None),
        ("民用爆炸物品购买许可", "01", 5, "34", None),
        ("烟花爆竹道路运输许可", "01", 5, "34", None),
        ("无犯罪记录证明开具", "20", 5, "4", None),
        ("居住证签发", "20", 15, "45", None),
        ("居住登记", "20", 0, "5", None),
    )),
    ("交通运输局", (
        ("道路货物运输经营许可", "01", 20, "34", None),
        ("道路旅客运输经营许可", "01", 20, "234", None),
        ("出租汽车经营许可", "01", 20, "3", None),
        ("网络预约出租汽车驾驶员证核发", "01", 20, "3", None),
        ("机动车维修经营备案", "10", 5, "34", None),
        ("道路运输从业人员从业资格证核发", "01", 10, "34", None),
        ("公路超限运输许可", "01", 10, "234", None),
        ("占用挖掘公路许可", "01", 20, "34", None),
        ("港口经营许可", "01", 30, "3", None),
        ("道路运输证配发", "20", 5, "34", "10.00"),
        ("网络预约出租汽车运输证核发", "01", 20, "3", "10.00"),
    )),
    ("卫生健康局", (
        ("医疗机构执业登记", "01", 30, "34", None),
        ("医疗机构设置审批", "01", 30, "34", None),
        ("公共场所卫生许可", "01", 20, "34", None),
        ("医师执业注册", "01", 20, "34", None),
        ("护士执业注册", "01", 20, "34", None),
        ("放射诊疗许可", "01", 20, "34", None),
        ("生活饮用水供水单位卫生许可", "01", 20, "34", None),
        ("母婴保健技术服务执业许可", "01", 20, "34", None),
        ("出生医学证明首次签发", "20", 0, "4", None),
        ("计划生育家庭奖励扶助资格确认", "07", 20, "45", None),
        ("生育登记", "20", 0, "45", None),
        ("职业病诊断机构备案", "10", 5, "23", None),
        ("从业人员预防性健康检查", "20", 5, "4", "35.00"),
    )),
    ("教育局", (
        ("民办学校办学许可", "01", 30, "234", None),
        ("教师资格认定", "07", 30, "34", None),
        ("校外培训机构办学许可", "01", 30, "4", None),
        ("幼儿园设立审批", "01", 30, "4", None),
        ("家庭经济困难学生资助认定", "07", 15, "4", None),
        ("学历证明书补办", "20", 10, "34", None),
        ("教师资格证书补发", "20", 10, "34", "10.00"),
    )),
    ("民政局", (
        ("内地居民结婚登记", "07", 0, "4", None),
        ("内地居民离婚登记", "07", 30, "4", None),
        ("社会团体成立登记", "01", 30, "234", None),
        ("民办非企业单位成立登记", "01", 30, "34", None),
        ("养老机构备案", "10", 5, "34", None),
        ("殡葬设施建设审批", "01", 20, "3", None),
        ("最低生活保障审核确认", "07", 30, "45", None),
        ("特困人员救助供养审核确认", "07", 20, "45", None),
        ("临时救助", "20", 10, "45", None),
        ("高龄老人津贴申领", "20", 10, "45", None),
        ("困难残疾人生活补贴和重度残疾人护理补贴", "20", 15, "45", None),
        ("地名命名更名审批", "01", 30, "34", None),
        ("老年人优待证办理", "20", 5, "45", None),
    )),
    ("人力资源和社会保障局", (
        ("劳务派遣经营许可", "01", 20, "34", None),
        ("人力资源服务许可", "01", 20, "34", None),
        ("企业实行不定时工作制和综合计算工时工作制审批", "01", 20, "34", None),
        ("失业保险金申领", "20", 10, "4", None),
        ("就业创业证申领", "20", 5, "45", None),
        ("灵活就业人员社会保险登记", "20", 0, "45", None),
        ("基本养老保险待遇核定", "07", 20, "34", None),
        ("工伤认定", "07", 30, "34", None),
        ("劳动能力鉴定", "07", 30, "3", "200.00"),
        ("技工学校设立审批", "01", 30, "3", None),
        ("社会保障卡补换", "20", 10, "45", "20.00"),
        ("城乡居民基本养老保险参保登记", "20", 0, "45", None),
        ("职业技能等级证书补发", "20", 10, "3", None),
    )),
    ("规划和自然资源局", (
        ("建设用地规划许可证核发", "01", 20, "34", None),
        ("建设工程规划许可证核发", "01", 20, "34", None),
        ("乡村建设规划许可证核发", "01", 20, "45", None),
        ("不动产首次登记", "07", 30, "34", "80.00"),
        ("不动产转移登记", "07", 10, "34", "80.00"),
        ("不动产抵押登记", "07", 5, "34", "80.00"),
        ("不动产登记资料查询", "20", 0, "34", None),
        ("建设项目用地预审与选址意见书核发", "01", 20, "234", None),
        ("采矿权登记", "07", 30, "2", None),
        ("临时用地审批", "01", 20, "34", None),
        ("测绘资质审批", "01", 20, "2", None),
        ("基础测绘成果提供", "20", 10, "23", "50.00"),
        ("不动产预告登记", "07", 5, "34", "80.00"),
    )),
    ("生态环境分局", (
        ("建设项目环境影响报告书审批", "01", 30, "234", None),
        ("建设项目环境影响报告表审批", "01", 20, "34", None),
        ("排污许可证核发", "01", 20, "34", None),
        ("危险废物经营许可证核发", "01", 20, "2", None),
        ("辐射安全许可证核发", "01", 20, "23", None),
        ("建设项目环境影响登记表备案", "10", 0, "34", None),
    )),
    ("文化广电旅游体育局", (
        ("娱乐场所经营许可", "01", 20, "34", None),
        ("互联网上网服务营业场所经营单位设立审批", "01", 20, "34", None),
        ("营业性演出审批", "01", 20, "34", None),
        ("旅行社业务经营许可", "01", 20, "23", None),
        ("出版物零售单位设立审批", "01", 20, "34", None),
        ("高危险性体育项目经营许可", "01", 30, "34", None),
        ("卫星电视广播地面接收设施安装许可", "01", 20, "23", None),
        ("文物保护单位修缮审批", "01", 20, "23", None),
    )),
    ("农业农村局", (
        ("农药经营许可", "01", 20, "34", None),
        ("兽药经营许可", "01", 20, "34", None),
        ("动物防疫条件合格证核发", "01", 20, "34", None),
        ("动物诊疗许可证核发", "01", 20, "34", None),
        ("农作物种子生产经营许可", "01", 20, "34", None),
        ("拖拉机和联合收割机登记", "07", 5, "34", "35.00"),
        ("渔业捕捞许可", "01", 20, "34", None),
        ("农村村民宅基地审批", "01", 20, "45", None),
        ("渔业船舶登记", "07", 10, "34", "20.00"),
    )),
    ("水务局", (
        ("取水许可", "01", 30, "234", None),
        ("生产建设项目水土保持方案审批", "01", 20, "234", None),
        ("河道管理范围内建设项目工程建设方案审批", "01", 20, "34", None),
        ("城镇污水排入排水管网许可", "01", 20, "34", None),
        ("洪水影响评价类审批", "01", 20, "34", None),
        ("临时占用供水设施审批", "01", 10, "34", None),
        ("河道采砂许可", "01", 20, "3", "300.00"),
    )),
    ("城市管理和综合执法局", (
        ("城市建筑垃圾处置核准", "01", 20, "34", None),
        ("设置大型户外广告审批", "01", 20, "34", None),
        ("临时占用城市道路审批", "01", 20, "34", "8.00"),
        ("城市生活垃圾经营性清扫收集运输服务许可", "01", 20, "34", None),
        ("砍伐迁移城市树木审批", "01", 20, "34", None),
        ("临时占用城市绿地审批", "01", 20, "34", None),
        ("临时搭建非永久性建筑物审批", "01", 20, "45", None),
        ("户外招牌设置备案", "10", 5, "45", None),
        ("挖掘城市道路审批", "01", 20, "34", "500.00"),
    )),
    ("应急管理局", (
        ("危险化学品经营许可", "01", 30, "34", None),
        ("烟花爆竹经营零售许可", "01", 20, "4", None),
        ("非药品类易制毒化学品生产经营备案", "10", 5, "34", None),
        ("非煤矿山企业安全生产许可", "01", 30, "2", None),
        ("生产安全事故应急预案备案", "10", 5, "34", None),
    )),
    ("商务局", (
        ("对外贸易经营者备案登记", "10", 5, "34", None),
        ("成品油零售经营资格审批", "01", 20, "23", None),
        ("单用途商业预付卡备案", "10", 5, "34", None),
        ("二手车交易市场经营者备案", "10", 5, "3", None),
        ("拍卖企业设立审批", "01", 20, "23", None),
    )),
    ("发展和改革局", (
        ("企业投资项目核准", "01", 20, "234", None),
        ("企业投资项目备案", "10", 0, "34", None),
        ("固定资产投资项目节能审查", "01", 20, "234", None),
        ("政府投资项目可行性研究报告审批", "01", 20, "234", None),
    )),
    ("工业和信息化局", (
        ("技术改造投资项目备案", "10", 5, "34", None),
        ("无线电台站设置审批", "01", 20, "2", None),
        ("监控化学品生产特别许可初审", "01", 20, "2", None),
    )),
    ("司法局", (
        ("法律援助经济困难审查", "20", 7, "45", None),
        ("律师事务所设立许可", "01", 20, "23", None),
        ("基层法律服务工作者执业核准", "01", 20, "34", None),
        ("公证员执业审核", "01", 20, "2", None),
        ("人民调解员聘任备案", "10", 5, "45", None),
    )),
    ("退役军人事务局", (
        ("退役士兵自主就业一次性经济补助金发放", "20", 20, "34", None),
        ("退役军人优待证申领", "20", 10, "45", None),
        ("残疾军人伤残等级评定", "07", 30, "34", None),
        ("义务兵家庭优待金发放", "20", 15, "45", None),
    )),
    ("医疗保障局", (
        ("基本医疗保险参保登记", "20", 0, "45", None),
        ("异地就医备案", "20", 0, "4", None),
        ("医疗费用零星报销", "20", 20, "34", None),
        ("门诊特定病种待遇认定", "07", 10, "4", None),
        ("医疗救助申请", "20", 20, "45", None),
        ("定点医药机构协议申请", "10", 30, "3", None),
    )),
    ("林业和园林局", (
        ("林木采伐许可证核发", "01", 20, "34", None),
        ("占用征收林地审核", "01", 20, "234", None),
        ("陆生野生动物人工繁育许可", "01", 20, "23", None),
        ("古树名木迁移审批", "01", 20, "3", None),
        ("植物检疫证书核发", "01", 5, "34", "15.00"),
    )),
    ("气象局", (
        ("雷电防护装置设计审核", "01", 20, "34", None),
        ("雷电防护装置竣工验收", "01", 10, "34", None),
        ("升放无人驾驶自由气球或系留气球活动审批", "01", 5, "34", None),
        ("气象资料提供", "20", 5, "3", "30.00"),
    )),
    ("人民防空办公室", (
        ("应建防空地下室的民用建筑项目报建审批", "01", 20, "34", None),
        ("拆除人民防空工程审批", "01", 20, "3", None),
        ("人民防空工程竣工验收备案", "10", 15, "34", None),
    )),
    ("残疾人联合会", (
        ("残疾人证核发", "20", 20, "45", None),
        ("残疾人证换领", "20", 10, "45", None),
        ("残疾人辅助器具适配补贴申领", "20", 15, "45", None),
    )),
)

# fmt: on
# Department numbers in basic codes: a fixed 3-digit number per department, in table order.
_FIRST_DEPARTMENT_NUMBER = 101


def _promised_limit(legal: int, basic_code: str) -> int:
    """Promised limit: at most half the legal one (Panyu: at least 50% shorter); some a third (Datong cut deeper)."""
    if legal == 0:
        return 0
    fraction = 0.5 if stable_fraction("promised", basic_code) < 0.7 else 0.34
    return max(1, int(legal * fraction))


def _certificate(name: str, type_code: str) -> str:
    """The result certificate of an approved case: the licence itself for licences, a decision letter otherwise."""
    if type_code == TYPE_LICENCE:
        if "许可证" in name:
            return name[: name.index("许可证") + 3]
        if name.endswith("许可"):
            return name + "证"
        return "准予行政许可决定书"
    if type_code == TYPE_CONFIRMATION:
        if name.startswith("不动产"):
            return "不动产权证书"
        return "登记证明"
    if type_code == TYPE_OTHER:
        return "备案回执"
    return ""


def _popularity(basic_code: str, name: str, type_code: str, legal: int) -> float:
    """Relative case volume: heavy-tailed, with the everyday items of citizens and small businesses on top."""
    base = 0.15 + 4.0 * stable_fraction("popularity", basic_code) ** 3
    if type_code == TYPE_PUBLIC_SERVICE:
        base *= 2.5
    if any(word in name for word in ("食品经营", "个体工商户", "企业设立", "居住证", "不动产", "身份证", "社会保障卡")):
        base *= 4.0
    if legal == 0:
        # Instant cases can never be early; kept to ~10% of cases so the network's early rate can echo the sources.
        base *= 0.3
    return round(base, 4)


@cache
def national_catalogue() -> tuple[CatalogueItem, ...]:
    """The whole catalogue, in basic-code order (built once; identical in every process)."""
    items: list[CatalogueItem] = []
    for department_index, (department, entries) in enumerate(_DEPARTMENT_ITEMS):
        department_number = _FIRST_DEPARTMENT_NUMBER + department_index
        for serial, (name, type_code, legal, levels, fee) in enumerate(entries, start=1):
            # Basic code an..10: department number (3) + item type (2) + serial within the department (5).
            basic_code = f"{department_number:03d}{type_code}{serial:05d}"
            items.append(
                CatalogueItem(
                    basic_code=basic_code,
                    name=name,
                    type_code=type_code,
                    department=department,
                    levels=levels,
                    legal_limit=legal,
                    promised_limit=_promised_limit(legal, basic_code),
                    fee_standard=Decimal(fee) if fee is not None else None,
                    certificate=_certificate(name, type_code),
                    popularity=_popularity(basic_code, name, type_code, legal),
                )
            )
    return tuple(items)
