"""Names and identifiers for synthetic data: people, enterprises, places, departments, ID and credit codes.

Everything here is pure and deterministic; randomness comes from the caller's ``random.Random``.
The identifiers are realistic on purpose (valid check digits, plausible birth dates): they are the
personal data that the trust tests later look for in reports, so they must look like the real thing.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from datetime import date, timedelta
from itertools import accumulate
from operator import mul
from random import Random

# The ~100 most common surnames with rough relative frequencies (per mille of the population).
# fmt: off
_SURNAME_TABLE = (
    ("王", 72), ("李", 72), ("张", 69), ("刘", 54), ("陈", 46), ("杨", 32), ("黄", 23), ("赵", 21), ("吴", 20),
    ("周", 19), ("徐", 13), ("孙", 12), ("马", 12), ("朱", 11), ("胡", 10), ("郭", 10), ("何", 9), ("林", 9),
    ("高", 9), ("罗", 9), ("郑", 8), ("梁", 8), ("谢", 7), ("宋", 6), ("唐", 6), ("许", 6), ("韩", 6), ("冯", 6),
    ("邓", 6), ("曹", 5), ("彭", 5), ("曾", 5), ("肖", 5), ("田", 5), ("董", 5), ("袁", 4), ("潘", 4), ("于", 4),
    ("蒋", 4), ("蔡", 4), ("余", 4), ("杜", 4), ("叶", 4), ("程", 4), ("苏", 3), ("魏", 3), ("吕", 3), ("丁", 3),
    ("任", 3), ("沈", 3), ("姚", 3), ("卢", 3), ("姜", 3), ("崔", 3), ("钟", 3), ("谭", 3), ("陆", 3), ("汪", 2),
    ("范", 2), ("金", 2), ("石", 2), ("廖", 2), ("贾", 2), ("夏", 2), ("韦", 2), ("付", 2), ("方", 2), ("白", 2),
    ("邹", 2), ("孟", 2), ("熊", 2), ("秦", 2), ("邱", 2), ("江", 2), ("尹", 2), ("薛", 2), ("闫", 2), ("段", 2),
    ("雷", 2), ("侯", 2), ("龙", 2), ("史", 2), ("陶", 1), ("黎", 1), ("贺", 1), ("顾", 1), ("毛", 1), ("郝", 1),
    ("龚", 1), ("邵", 1), ("万", 1), ("钱", 1), ("严", 1), ("覃", 1), ("武", 1), ("戴", 1), ("莫", 1), ("孔", 1),
    ("欧阳", 1), ("司徒", 1),
)

# fmt: on
SURNAMES: tuple[str, ...] = tuple(name for name, _ in _SURNAME_TABLE)
_SURNAME_CUM_WEIGHTS: tuple[int, ...] = tuple(accumulate(weight for _, weight in _SURNAME_TABLE))

# fmt: off
GIVEN_MALE: tuple[str, ...] = (
    "伟", "强", "磊", "军", "勇", "杰", "涛", "斌", "超", "明", "刚", "平", "辉", "鹏", "华", "飞", "鑫", "波", "宇",
    "浩", "凯", "健", "俊", "帆", "帅", "旭", "宁", "龙", "林", "洋", "峰", "建", "国", "志", "文", "永", "海", "荣",
    "家", "子", "博", "晨", "俊杰", "浩然", "子轩", "宇航", "梓豪", "志强", "建华", "国栋", "家豪", "伟民",
)


GIVEN_FEMALE: tuple[str, ...] = (
    "芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "秀", "玲", "燕", "婷", "雪", "琳", "倩", "颖", "慧", "莉", "萍",
    "红", "梅", "琴", "云", "洁", "佳", "欣", "怡", "悦", "薇", "蕾", "晶", "妍", "诗", "雅", "紫", "嘉", "梦",
    "雨", "思", "子涵", "欣怡", "梓萱", "诗涵", "雅婷", "晓燕", "丽华", "秀英", "美玲", "嘉欣", "淑芬",
)

# fmt: on
# Second characters that combine with most single first characters into natural two-character given names.
_GIVEN_SECOND = ("明", "华", "军", "平", "玲", "英", "芳", "林", "辉", "珍", "成", "文", "霞", "兰", "东", "生")


_BRAND_CHARS = tuple("鑫盛达华泰源丰宏兴隆恒信瑞安康嘉博创汇通海天金永立新德锦南粤穗禾峰辉联润晟诚优")
# fmt: off
_INDUSTRIES = (
    "餐饮管理", "商贸", "贸易", "建筑工程", "装饰工程", "物流", "信息科技", "网络科技", "电子科技", "医药", "医疗器械",
    "教育咨询", "文化传播", "广告", "物业管理", "房地产开发", "汽车服务", "食品", "服装", "五金机电", "环保科技",
    "投资咨询", "人力资源", "旅游", "酒店管理", "生物科技", "农业发展", "水产", "包装材料", "印刷",
)

# fmt: on
_COMPANY_SUFFIXES = ("有限公司", "有限公司", "有限公司", "有限责任公司", "股份有限公司", "经营部", "商行")

# Departments of a people's government (city, district, county), as they are named in Guangdong today.
GOVERNMENT_DEPARTMENTS: tuple[str, ...] = (
    "市场监督管理局",
    "住房和城乡建设局",
    "公安局",
    "交通运输局",
    "卫生健康局",
    "教育局",
    "民政局",
    "人力资源和社会保障局",
    "规划和自然资源局",
    "生态环境分局",
    "文化广电旅游体育局",
    "农业农村局",
    "水务局",
    "城市管理和综合执法局",
    "应急管理局",
    "商务局",
    "发展和改革局",
    "工业和信息化局",
    "司法局",
    "退役军人事务局",
    "医疗保障局",
    "林业和园林局",
    "气象局",
    "人民防空办公室",
    "残疾人联合会",
)

# Provincial counterparts: a province has 厅 and 委员会 where a city or district has 局.
PROVINCE_DEPARTMENT_NAMES: dict[str, str] = {
    "住房和城乡建设局": "住房和城乡建设厅",
    "公安局": "公安厅",
    "交通运输局": "交通运输厅",
    "卫生健康局": "卫生健康委员会",
    "教育局": "教育厅",
    "民政局": "民政厅",
    "人力资源和社会保障局": "人力资源和社会保障厅",
    "规划和自然资源局": "自然资源厅",
    "生态环境分局": "生态环境厅",
    "文化广电旅游体育局": "文化和旅游厅",
    "农业农村局": "农业农村厅",
    "水务局": "水利厅",
    "商务局": "商务厅",
    "发展和改革局": "发展和改革委员会",
    "工业和信息化局": "工业和信息化厅",
    "司法局": "司法厅",
    "林业和园林局": "林业局",
    "人民防空办公室": "人民防空办公室",
}

# City-level names that differ from the district's (a district 生态环境分局 is a branch of the city 生态环境局).
CITY_DEPARTMENT_NAMES: dict[str, str] = {"生态环境分局": "生态环境局", "卫生健康局": "卫生健康委员会"}

# A street (街道) handles the few items it implements in its own offices, not in district bureaus.
GUANGZHOU_MIGRANT_OFFICE = "来穗人员服务管理中心"
MIGRANT_OFFICE = "流动人口服务管理站"
STREET_OFFICES: dict[str, str] = {
    "市场监督管理局": "市场监督管理所",
    "公安局": GUANGZHOU_MIGRANT_OFFICE,
    "住房和城乡建设局": GUANGZHOU_MIGRANT_OFFICE,
    "卫生健康局": "公共服务办公室",
    "民政局": "社会事务办公室",
    "人力资源和社会保障局": "劳动保障服务中心",
    "医疗保障局": "政务服务中心",
    "规划和自然资源局": "规划建设办公室",
    "农业农村局": "规划建设办公室",
    "城市管理和综合执法局": "综合行政执法队",
    "司法局": "司法所",
    "退役军人事务局": "退役军人服务站",
    "残疾人联合会": "残疾人联合会",
}
DEFAULT_STREET_OFFICE = "政务服务中心"

# Posts (岗位) of the approval workflow, the unit of responsibility the supervision rules name.
POST_WINDOW = "窗口受理岗"
POST_REVIEW = "承办审查岗"
POST_CHECK = "科室审核岗"
POST_APPROVE = "分管领导审批岗"
POST_ISSUE = "发证送达岗"

# Known places: node id -> (Chinese name, this level's part of the administrative division code).
# Real codes for the demo tree (Guangdong 44, Guangzhou 4401, Panyu 440113 ...); other ids get derived ones.
KNOWN_PLACES: dict[str, tuple[str, str]] = {
    "gd": ("广东省", "44"),
    "gd.gz": ("广州市", "01"),
    "gd.sz": ("深圳市", "03"),
    "gd.fs": ("佛山市", "06"),
    "gd.dg": ("东莞市", "19"),
    "gd.zh": ("珠海市", "04"),
    "gd.gz.py": ("番禺区", "13"),
    "gd.gz.th": ("天河区", "06"),
    "gd.gz.yx": ("越秀区", "04"),
    "gd.gz.hz": ("海珠区", "05"),
    "gd.gz.lw": ("荔湾区", "03"),
    "gd.gz.by": ("白云区", "11"),
    "gd.gz.hp": ("黄埔区", "12"),
    "gd.gz.hd": ("花都区", "14"),
    "gd.gz.ns": ("南沙区", "15"),
    "gd.gz.ch": ("从化区", "17"),
    "gd.gz.zc": ("增城区", "18"),
    "gd.gz.py.sq": ("市桥街道", "001"),
    "gd.gz.py.sw": ("沙湾街道", "002"),
    "gd.gz.py.dl": ("大龙街道", "003"),
    "gd.gz.py.lj": ("洛浦街道", "004"),
    "gd.gz.py.ds": ("大石街道", "005"),
    "gd.sz.ft": ("福田区", "04"),
    "gd.sz.ns": ("南山区", "05"),
    "gd.sz.ft.hf": ("华富街道", "001"),
    "gd.sz.ft.sh": ("沙头街道", "002"),
    "gd.sz.ns.yh": ("粤海街道", "001"),
    "gd.sz.ns.sk": ("蛇口街道", "002"),
    "gd.gz.th.sp": ("石牌街道", "001"),
    "gd.gz.th.lh": ("林和街道", "002"),
    "gd.gz.yx.bj": ("北京街道", "001"),
    "bj": ("北京市", "11"),
    "sh": ("上海市", "31"),
    "tj": ("天津市", "12"),
    "cq": ("重庆市", "50"),
    "gx": ("广西壮族自治区", "45"),
    "gx.bh": ("北海市", "05"),
    "sx": ("山西省", "14"),
    "sx.dt": ("大同市", "02"),
    "hn": ("湖南省", "43"),
    "zj": ("浙江省", "33"),
    "js": ("江苏省", "32"),
    "fj": ("福建省", "35"),
    "sc": ("四川省", "51"),
}

# Characters for names of places that are not in KNOWN_PLACES (deterministic from the id).
# fmt: off
_PLACE_CHARS = (
    "东", "南", "西", "北", "新", "华", "湖", "山", "江", "河", "城", "桥", "岗", "沙", "洲", "塘", "平", "安", "宁",
    "兴", "和", "丰", "泰", "福", "石", "龙", "凤", "金", "梅", "桂", "荔", "松", "源", "清", "明", "秀", "阳", "云",
)

# fmt: on
_LEVEL_SUFFIX = {1: "省", 2: "市", 3: "区", 4: "街道"}

# 6-digit division codes of places applicants commonly come from (Guangdong and the provinces that send labour).
# fmt: off
MIGRANT_AREAS: tuple[str, ...] = (
    "440103", "440104", "440105", "440106", "440111", "440112", "440113", "440114", "440115", "440117", "440118",
    "440303", "440304", "440604", "441900", "445102", "445202", "441402", "440882", "430102", "430621", "431102",
    "360102", "360731", "450102", "450802", "510104", "511302", "420102", "421202", "411302", "350102", "522101",
)

# fmt: on
_USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES = {ch: value for value, ch in enumerate(_USCC_CHARSET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def stable_int(*parts: object) -> int:
    """A stable 64-bit integer from the given parts (unlike hash(), identical in every process)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def stable_fraction(*parts: object) -> float:
    """A stable number in [0, 1) from the given parts."""
    return stable_int(*parts) / 2**64


def surname(rng: Random) -> str:
    """A surname drawn by its frequency in the population."""
    return SURNAMES[bisect_right(_SURNAME_CUM_WEIGHTS, rng.random() * _SURNAME_CUM_WEIGHTS[-1])]


def person_name(rng: Random, female: bool | None = None) -> str:
    """A realistic Chinese full name: surname plus a one- or two-character given name."""
    if female is None:
        female = rng.random() < 0.5
    pool = GIVEN_FEMALE if female else GIVEN_MALE
    given = pool[int(rng.random() * len(pool))]
    if len(given) == 1 and rng.random() < 0.55:
        given += _GIVEN_SECOND[int(rng.random() * len(_GIVEN_SECOND))]
    return surname(rng) + given


def enterprise_name(rng: Random, place: str) -> str:
    """A plausible enterprise name registered in ``place``, e.g. 广州市番禺区鑫达餐饮管理有限公司."""
    brand = _BRAND_CHARS[int(rng.random() * len(_BRAND_CHARS))] + _BRAND_CHARS[int(rng.random() * len(_BRAND_CHARS))]
    industry = _INDUSTRIES[int(rng.random() * len(_INDUSTRIES))]
    suffix = _COMPANY_SUFFIXES[int(rng.random() * len(_COMPANY_SUFFIXES))]
    return f"{place}{brand}{industry}{suffix}"


def resident_id_number(area6: str, birth: date, sequence: int, female: bool) -> str:
    """An 18-character resident ID number (GB 11643): area, birth date, sequence (odd = male), ISO 7064 check."""
    serial = sequence % 1000
    if (serial % 2 == 1) == female:  # the 17th digit is odd for men, even for women
        serial = (serial + 1) % 1000
    body = f"{area6}{birth:%Y%m%d}{serial:03d}"
    return body + _ID_CHECK[sum(map(mul, map(int, body), _ID_WEIGHTS)) % 11]


def is_valid_resident_id(number: str) -> bool:
    """True when an 18-character resident ID number has a valid check character and birth date."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(ch) * weight for ch, weight in zip(number[:17], _ID_WEIGHTS, strict=True))
    return number[17] == _ID_CHECK[total % 11]


def random_resident(rng: Random, local_area6: str, today: date) -> tuple[str, str, bool]:
    """(name, resident ID number, female) of an adult applicant; most are local, some come from elsewhere."""
    female = rng.random() < 0.5
    area6 = local_area6 if rng.random() < 0.6 else MIGRANT_AREAS[int(rng.random() * len(MIGRANT_AREAS))]
    age_days = int((18 + rng.random() * 57) * 365.25)
    birth = today - timedelta(days=age_days)
    return person_name(rng, female), resident_id_number(area6, birth, int(rng.random() * 1000), female), female


def _organization_code(body8: str) -> str:
    """GB 11714 organization code: 8 digits plus a check character (mod 11, 10 -> 'X')."""
    check = 11 - sum(map(mul, map(int, body8), _ORG_WEIGHTS)) % 11
    return body8 + ("X" if check == 10 else "0" if check == 11 else str(check))


def unified_credit_code(registry: str, category: str, area6: str, serial: int) -> str:
    """An 18-character unified social credit code (GB 32100-2015) with valid organization and final check chars.

    ``registry`` is the registering authority (1 机构编制, 5 民政, 9 市场监管), ``category`` the kind of body
    (1 机关 / 企业), ``serial`` any integer (its last 8 digits make the organization code).
    """
    body = f"{registry}{category}{area6}{_organization_code(f'{serial % 10**8:08d}')}"
    total = sum(map(mul, map(_USCC_VALUES.__getitem__, body), _USCC_WEIGHTS))
    return body + _USCC_CHARSET[(31 - total % 31) % 31]


def is_valid_credit_code(code: str) -> bool:
    """True when an 18-character unified social credit code has a valid final check character."""
    if len(code) != 18 or any(ch not in _USCC_CHARSET for ch in code):
        return False
    total = sum(map(mul, map(_USCC_VALUES.__getitem__, code[:17]), _USCC_WEIGHTS))
    return code[17] == _USCC_CHARSET[(31 - total % 31) % 31]


def place_name(node_id: str) -> str:
    """Chinese name of the place a node id stands for (known demo places, else derived from the id)."""
    known = KNOWN_PLACES.get(node_id)
    if known is not None:
        return known[0]
    depth = node_id.count(".") + 1
    first = _PLACE_CHARS[stable_int("place", node_id, 1) % len(_PLACE_CHARS)]
    second = _PLACE_CHARS[stable_int("place", node_id, 2) % len(_PLACE_CHARS)]
    if second == first:
        second = _PLACE_CHARS[(stable_int("place", node_id, 2) + 1) % len(_PLACE_CHARS)]
    return first + second + _LEVEL_SUFFIX.get(depth, "村")


def area_code_part(node_id: str) -> str:
    """The node's own part of the 9-digit division code: 2 digits (province, city, district) or 3 (street)."""
    known = KNOWN_PLACES.get(node_id)
    if known is not None:
        return known[1]
    depth = node_id.count(".") + 1
    if depth == 1:
        return f"{11 + stable_int('area', node_id) % 55:02d}"
    if depth in (2, 3):
        return f"{1 + stable_int('area', node_id) % 89:02d}"
    return f"{1 + stable_int('area', node_id) % 899:03d}"
